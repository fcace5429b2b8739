/* The part of MariaDB Connector/C 3 (Debian's libmariadb3, libmariadb.so.3) that Postie uses,
 * declared here so that the build needs no libmariadb-dev: the library is loaded at run time
 * with dlopen(3) and each function found with dlsym(3) (Sources/MariaDB/Library.swift).
 *
 * Every layout and constant below is as in <mariadb/mysql.h>, <mariadb/mariadb_com.h>,
 * <mariadb/mariadb_stmt.h> and <mariadb/errmsg.h> of libmariadb-dev 3.3 (MariaDB 10.11,
 * Debian 12), and was checked against them by scripts/check-mariadb-shim (sizeof, offsetof,
 * enum values). The ABI of libmariadb.so.3 keeps them. */
#ifndef POSTIE_CMARIADB_SHIM_H
#define POSTIE_CMARIADB_SHIM_H

#include <stddef.h>

typedef char my_bool;

/* Opaque: only ever used through pointers the library hands out. */
typedef struct st_mysql MYSQL;
typedef struct st_mysql_stmt MYSQL_STMT;
typedef struct st_mysql_res MYSQL_RES;

/* mariadb_com.h */
enum enum_field_types {
    MYSQL_TYPE_DECIMAL = 0, MYSQL_TYPE_TINY = 1, MYSQL_TYPE_SHORT = 2, MYSQL_TYPE_LONG = 3,
    MYSQL_TYPE_FLOAT = 4, MYSQL_TYPE_DOUBLE = 5, MYSQL_TYPE_NULL = 6, MYSQL_TYPE_TIMESTAMP = 7,
    MYSQL_TYPE_LONGLONG = 8, MYSQL_TYPE_INT24 = 9, MYSQL_TYPE_DATE = 10, MYSQL_TYPE_TIME = 11,
    MYSQL_TYPE_DATETIME = 12, MYSQL_TYPE_YEAR = 13, MYSQL_TYPE_NEWDATE = 14, MYSQL_TYPE_VARCHAR = 15,
    MYSQL_TYPE_BIT = 16,
    MYSQL_TYPE_JSON = 245, MYSQL_TYPE_NEWDECIMAL = 246, MYSQL_TYPE_ENUM = 247, MYSQL_TYPE_SET = 248,
    MYSQL_TYPE_TINY_BLOB = 249, MYSQL_TYPE_MEDIUM_BLOB = 250, MYSQL_TYPE_LONG_BLOB = 251,
    MYSQL_TYPE_BLOB = 252, MYSQL_TYPE_VAR_STRING = 253, MYSQL_TYPE_STRING = 254,
    MYSQL_TYPE_GEOMETRY = 255
};

/* mysql.h: the options Postie sets with mysql_options(). */
enum mysql_option {
    MYSQL_OPT_CONNECT_TIMEOUT = 0,
    MYSQL_READ_DEFAULT_FILE = 4,
    MYSQL_READ_DEFAULT_GROUP = 5,
    MYSQL_SET_CHARSET_NAME = 7,
    MYSQL_OPT_LOCAL_INFILE = 8,
    MYSQL_OPT_READ_TIMEOUT = 11,
    MYSQL_OPT_WRITE_TIMEOUT = 12,
    MYSQL_OPT_RECONNECT = 20,
    MYSQL_OPT_SSL_VERIFY_SERVER_CERT = 21,
    MYSQL_OPT_SSL_KEY = 25,
    MYSQL_OPT_SSL_CERT = 26,
    MYSQL_OPT_SSL_CA = 27,
    MYSQL_OPT_SSL_CAPATH = 28,
    MYSQL_OPT_SSL_CIPHER = 29,
    MYSQL_OPT_SSL_ENFORCE = 38
};

/* mysql.h: a result column. */
typedef struct st_mysql_field {
    char *name;
    char *org_name;
    char *table;
    char *org_table;
    char *db;
    char *catalog;
    char *def;
    unsigned long length;
    unsigned long max_length;
    unsigned int name_length;
    unsigned int org_name_length;
    unsigned int table_length;
    unsigned int org_table_length;
    unsigned int db_length;
    unsigned int catalog_length;
    unsigned int def_length;
    unsigned int flags;
    unsigned int decimals;
    unsigned int charsetnr;
    enum enum_field_types type;
    void *extension;
} MYSQL_FIELD;

/* mariadb_stmt.h: a parameter or result buffer of a prepared statement. The library's
 * internal function pointers are declared as void * (the same size); Postie leaves them zero. */
typedef struct st_mysql_bind {
    unsigned long *length;
    my_bool *is_null;
    void *buffer;
    my_bool *error;
    union {
        unsigned char *row_ptr;
        char *indicator;
    } u;
    void *store_param_func;
    void *fetch_result;
    void *skip_result;
    unsigned long buffer_length;
    unsigned long offset;
    unsigned long length_value;
    unsigned int flags;
    unsigned int pack_length;
    enum enum_field_types buffer_type;
    my_bool error_value;
    my_bool is_unsigned;
    my_bool long_data_used;
    my_bool is_null_value;
    void *extension;
} MYSQL_BIND;

/* mariadb_stmt.h: what mysql_stmt_fetch() returns besides 0 and 1 (error). */
#define MYSQL_NO_DATA 100
#define MYSQL_DATA_TRUNCATED 101

/* errmsg.h: client errors that mean the connection is gone or never came. */
#define CR_MIN_ERROR 2000
#define CR_MAX_ERROR 2999
#define CR_CONNECTION_ERROR 2002
#define CR_CONN_HOST_ERROR 2003
#define CR_SERVER_GONE_ERROR 2006
#define CR_SERVER_LOST 2013

/* The functions, as pointer types for dlsym(3). */
typedef int (*postie_mysql_server_init_fn)(int argc, char **argv, char **groups);
typedef MYSQL *(*postie_mysql_init_fn)(MYSQL *mysql);
typedef int (*postie_mysql_options_fn)(MYSQL *mysql, enum mysql_option option, const void *arg);
typedef MYSQL *(*postie_mysql_real_connect_fn)(MYSQL *mysql, const char *host, const char *user, const char *passwd,
                                               const char *db, unsigned int port, const char *unix_socket,
                                               unsigned long clientflag);
typedef void (*postie_mysql_close_fn)(MYSQL *mysql);
typedef const char *(*postie_mysql_error_fn)(MYSQL *mysql);
typedef unsigned int (*postie_mysql_errno_fn)(MYSQL *mysql);
typedef const char *(*postie_mysql_get_client_info_fn)(void);
typedef unsigned int (*postie_mysql_num_fields_fn)(MYSQL_RES *res);
typedef MYSQL_FIELD *(*postie_mysql_fetch_fields_fn)(MYSQL_RES *res);
typedef void (*postie_mysql_free_result_fn)(MYSQL_RES *res);
typedef MYSQL_STMT *(*postie_mysql_stmt_init_fn)(MYSQL *mysql);
typedef int (*postie_mysql_stmt_prepare_fn)(MYSQL_STMT *stmt, const char *query, unsigned long length);
typedef unsigned long (*postie_mysql_stmt_param_count_fn)(MYSQL_STMT *stmt);
typedef my_bool (*postie_mysql_stmt_bind_param_fn)(MYSQL_STMT *stmt, MYSQL_BIND *bind);
typedef int (*postie_mysql_stmt_execute_fn)(MYSQL_STMT *stmt);
typedef MYSQL_RES *(*postie_mysql_stmt_result_metadata_fn)(MYSQL_STMT *stmt);
typedef my_bool (*postie_mysql_stmt_bind_result_fn)(MYSQL_STMT *stmt, MYSQL_BIND *bind);
typedef int (*postie_mysql_stmt_store_result_fn)(MYSQL_STMT *stmt);
typedef int (*postie_mysql_stmt_fetch_fn)(MYSQL_STMT *stmt);
typedef int (*postie_mysql_stmt_fetch_column_fn)(MYSQL_STMT *stmt, MYSQL_BIND *bind, unsigned int column,
                                                 unsigned long offset);
typedef my_bool (*postie_mysql_stmt_free_result_fn)(MYSQL_STMT *stmt);
typedef my_bool (*postie_mysql_stmt_close_fn)(MYSQL_STMT *stmt);
typedef const char *(*postie_mysql_stmt_error_fn)(MYSQL_STMT *stmt);
typedef unsigned int (*postie_mysql_stmt_errno_fn)(MYSQL_STMT *stmt);
typedef const char *(*postie_mysql_stmt_sqlstate_fn)(MYSQL_STMT *stmt);

#endif
