// The parts of Linux-PAM's <security/pam_appl.h> that Postie's auth worker uses, declared
// here so that building Postie needs no -dev package: libpam.so.0 is loaded at run time with
// dlopen(3) (PAMAuth/PAMLibrary.swift). The values are Linux-PAM's ABI (_pam_types.h). Also
// the descriptor passing the worker's spool-ownership request needs.
#ifndef POSTIE_CPAM_SHIM_H
#define POSTIE_CPAM_SHIM_H

#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct pam_handle pam_handle_t;

struct pam_message {
    int msg_style;
    const char *msg;
};

struct pam_response {
    char *resp;
    int resp_retcode;
};

struct pam_conv {
    int (*conv)(int num_msg, const struct pam_message **msg, struct pam_response **resp, void *appdata_ptr);
    void *appdata_ptr;
};

// Return codes.
#define POSTIE_PAM_SUCCESS 0
#define POSTIE_PAM_OPEN_ERR 1
#define POSTIE_PAM_SYMBOL_ERR 2
#define POSTIE_PAM_SERVICE_ERR 3
#define POSTIE_PAM_SYSTEM_ERR 4
#define POSTIE_PAM_BUF_ERR 5
#define POSTIE_PAM_PERM_DENIED 6
#define POSTIE_PAM_AUTH_ERR 7
#define POSTIE_PAM_CRED_INSUFFICIENT 8
#define POSTIE_PAM_AUTHINFO_UNAVAIL 9
#define POSTIE_PAM_USER_UNKNOWN 10
#define POSTIE_PAM_MAXTRIES 11
#define POSTIE_PAM_NEW_AUTHTOK_REQD 12
#define POSTIE_PAM_ACCT_EXPIRED 13
#define POSTIE_PAM_CONV_ERR 19
#define POSTIE_PAM_ABORT 26

// Items (pam_set_item).
#define POSTIE_PAM_SERVICE 1
#define POSTIE_PAM_USER 2
#define POSTIE_PAM_TTY 3
#define POSTIE_PAM_RHOST 4
#define POSTIE_PAM_FAIL_DELAY 10

// Flags.
#define POSTIE_PAM_SILENT 0x8000
#define POSTIE_PAM_DISALLOW_NULL_AUTHTOK 0x0001

// Conversation message styles.
#define POSTIE_PAM_PROMPT_ECHO_OFF 1
#define POSTIE_PAM_PROMPT_ECHO_ON 2
#define POSTIE_PAM_ERROR_MSG 3
#define POSTIE_PAM_TEXT_INFO 4

typedef int (*postie_pam_start_fn)(const char *service, const char *user, const struct pam_conv *conv, pam_handle_t **handle);
typedef int (*postie_pam_end_fn)(pam_handle_t *handle, int status);
typedef int (*postie_pam_authenticate_fn)(pam_handle_t *handle, int flags);
typedef int (*postie_pam_acct_mgmt_fn)(pam_handle_t *handle, int flags);
typedef int (*postie_pam_set_item_fn)(pam_handle_t *handle, int item, const void *value);
typedef const char *(*postie_pam_strerror_fn)(pam_handle_t *handle, int status);
typedef void (*postie_pam_fail_delay_fn)(int status, unsigned int usec_delay, void *appdata_ptr);

/// What the conversation function answers with.
struct postie_pam_appdata {
    const char *user;
    const char *password;
};

// Descriptor passing (SCM_RIGHTS) between the server and its auth workers: the CMSG macros
// are not visible from Swift.

/// sendmsg(2) of `length` bytes with `count` (at most 2) descriptors; MSG_NOSIGNAL.
static inline ssize_t postie_send_with_fds(int sock, const void *bytes, size_t length, const int *fds, int count) {
    struct msghdr message;
    struct iovec vector;
    char control[CMSG_SPACE(sizeof(int) * 2)];
    if (count < 0 || count > 2) return -1;
    memset(&message, 0, sizeof message);
    vector.iov_base = (void *)bytes;
    vector.iov_len = length;
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    if (count > 0) {
        struct cmsghdr *header;
        memset(control, 0, sizeof control);
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
    }
    return sendmsg(sock, &message, MSG_NOSIGNAL);
}

/// recvmsg(2) into `bytes`; up to `max` (at most 2) received descriptors (close-on-exec) go to
/// `fds`, their number to `*count`; any beyond are closed.
static inline ssize_t postie_recv_with_fds(int sock, void *bytes, size_t length, int *fds, int max, int *count) {
    struct msghdr message;
    struct iovec vector;
    char control[CMSG_SPACE(sizeof(int) * 4)];
    struct cmsghdr *header;
    ssize_t received;
    *count = 0;
    memset(&message, 0, sizeof message);
    vector.iov_base = bytes;
    vector.iov_len = length;
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    received = recvmsg(sock, &message, 0x40000000 /* MSG_CMSG_CLOEXEC */);
    if (received < 0) return received;
    for (header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            int n = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *received_fds = (int *)CMSG_DATA(header);
            for (int i = 0; i < n; i++) {
                if (*count < max) fds[(*count)++] = received_fds[i];
                else close(received_fds[i]);
            }
        }
    }
    return received;
}

#endif
