// Linux system calls that Swift cannot reach through Glibc: openat2, which glibc has no
// wrapper for (and Swift does not import the variadic syscall(2)), and preadv2, which glibc
// declares only under _GNU_SOURCE.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/uio.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <linux/openat2.h>
#endif

/// openat2(2) with RESOLVE_CACHED (Linux 5.12): opens `path` only if every component is in the
/// kernel's lookup cache, failing with EAGAIN where the lookup would need the disk; ENOSYS
/// where the kernel or the platform has no openat2.
static inline int postie_open_cached(const char *path, int flags) {
#if defined(__linux__) && defined(SYS_openat2) && defined(RESOLVE_CACHED)
    struct open_how how = { .flags = (unsigned long long)flags, .mode = 0, .resolve = RESOLVE_CACHED };
    return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
#else
    (void)path; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

/// open(2)'s O_NOATIME and O_PATH, which glibc also declares only under _GNU_SOURCE (0 elsewhere).
#ifdef __linux__
#define POSTIE_O_NOATIME 01000000
#define POSTIE_O_PATH 010000000
#else
#define POSTIE_O_NOATIME 0
#define POSTIE_O_PATH 0
#endif

#ifdef __linux__
ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags);
#endif

/// One read at the current offset that takes only what the page cache holds (preadv2(2) with
/// RWF_NOWAIT, Linux 4.14): the count read, or -1 with EAGAIN when it would block.
static inline ssize_t postie_read_cached(int fd, void *buffer, size_t count) {
#ifdef __linux__
    struct iovec vector = { buffer, count };
    return preadv2(fd, &vector, 1, -1, 0x00000008 /* RWF_NOWAIT */);
#else
    (void)fd; (void)buffer; (void)count;
    errno = ENOSYS;
    return -1;
#endif
}
