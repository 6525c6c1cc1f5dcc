/* uv_tls_echo_server: the TLS baseline for bench/tls.sh.
 *
 * A TLS echo server on plain libuv and OpenSSL, with no pipeworks code in it, written the way
 * a careful hand-written server is:
 *   - OpenSSL on memory BIOs (the socket stays libuv's): ciphertext read from the socket goes
 *     into the read BIO, what OpenSSL produces is taken from the write BIO and written;
 *   - one 64 KiB read buffer for the loop (its content is copied into the read BIO at once),
 *     and the plaintext of every record a read completes gathered and passed to a single
 *     SSL_write, so many small records become a few large ones;
 *   - the ciphertext written with uv_try_write straight from the write BIO's memory, only the
 *     unsent remainder copied into a uv_write request;
 *   - SSL_MODE_RELEASE_BUFFERS (idle connections give their record buffers back),
 *     TCP_NODELAY, backlog 511, reading paused while more than 1 MiB is queued for a peer
 *     that does not read, resumed below 256 KiB;
 *   - a close_notify from the client is answered with one, then the write side is shut down
 *     after the queued writes; a TCP EOF without close_notify (truncation) closes at once.
 * Sessions can be resumed (TLS 1.3 tickets, TLS 1.2 tickets and the server-side cache).
 *   --idle-timeout SECONDS: connections silent that long are closed, with one timer per
 *         connection restarted by each read, as a server with idle timeouts is written by
 *         hand; to compare with echo_server's default idle deadline on equal terms.
 *
 * Usage: uv_tls_echo_server --tls-cert FILE --tls-key FILE [--bind HOST:PORT]
 *                           [--idle-timeout SECONDS]
 *        (default 127.0.0.1:0, IPv6 as [::1]:0; no idle timeout)
 * The first line on stdout is "listening on HOST:PORT" with the real port.
 * SIGINT / SIGTERM close everything and exit 0.
 */
#include "uv_server_common.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF_SIZE (64 * 1024)
#define PLAIN_BUF_SIZE (64 * 1024)
#define WRITE_QUEUE_HIGH (1024 * 1024)
#define WRITE_QUEUE_LOW (256 * 1024)

typedef struct {
    uv_tcp_t handle; /* first member: a handle pointer is a conn_t pointer */
    SSL* ssl;
    BIO* rbio; /* ciphertext from the peer, read by OpenSSL */
    BIO* wbio; /* ciphertext for the peer, written by OpenSSL */
    int paused;
    /* --idle-timeout: one timer per connection restarted by every read (uv_timer_again); the
       connection is freed once both handles have closed. */
    uv_timer_t idle;
    int open_handles;
} conn_t;

static uint64_t idle_timeout_ms; /* 0: no idle timeout */

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} write_req_t;

static uv_loop_t* loop;
static SSL_CTX* ctx;
static uv_tcp_t tcp_server;
static char read_buf[READ_BUF_SIZE];
static char plain_buf[PLAIN_BUF_SIZE];

static void on_conn_closed(uv_handle_t* handle) {
    conn_t* c = (conn_t*)handle->data;
    if (--c->open_handles > 0) return;
    SSL_free(c->ssl); /* frees both BIOs */
    free(c);
}

static void close_conn(conn_t* c) {
    if (!uv_is_closing((uv_handle_t*)&c->handle)) {
        uv_close((uv_handle_t*)&c->handle, on_conn_closed);
        if (idle_timeout_ms > 0) uv_close((uv_handle_t*)&c->idle, on_conn_closed);
    }
}

static void on_idle(uv_timer_t* t) {
    close_conn((conn_t*)t->data);
}

static void alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) {
    (void)handle;
    (void)suggested;
    buf->base = read_buf;
    buf->len = sizeof(read_buf);
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);

static void on_write(uv_write_t* req, int status) {
    conn_t* c = (conn_t*)req->handle;
    free(req);
    if (status < 0) {
        if (status != UV_ECANCELED) close_conn(c);
        return;
    }
    if (c->paused && !uv_is_closing((uv_handle_t*)&c->handle) &&
        uv_stream_get_write_queue_size((uv_stream_t*)&c->handle) <= WRITE_QUEUE_LOW) {
        c->paused = 0;
        if (uv_read_start((uv_stream_t*)&c->handle, alloc_cb, on_read) != 0) close_conn(c);
    }
}

/* Writes out what OpenSSL has put in the write BIO. 0, or -1 when the connection failed. */
static int flush(conn_t* c) {
    char* data;
    long len = BIO_get_mem_data(c->wbio, &data);
    if (len <= 0) return 0;
    uv_stream_t* stream = (uv_stream_t*)&c->handle;
    uv_buf_t buf = uv_buf_init(data, (unsigned int)len);
    int n = uv_try_write(stream, &buf, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    } else if (n < 0) {
        return -1;
    }
    if (n < len) {
        size_t rest = (size_t)(len - n);
        write_req_t* wr = malloc(sizeof(*wr) + rest);
        if (wr == NULL) return -1;
        memcpy(wr->data, data + n, rest);
        wr->buf = uv_buf_init(wr->data, (unsigned int)rest);
        if (uv_write(&wr->req, stream, &wr->buf, 1, on_write) != 0) {
            free(wr);
            return -1;
        }
        if (uv_stream_get_write_queue_size(stream) > WRITE_QUEUE_HIGH) {
            uv_read_stop(stream);
            c->paused = 1;
        }
    }
    (void)BIO_reset(c->wbio); /* a writable memory BIO is emptied by a reset */
    return 0;
}

static void on_shutdown(uv_shutdown_t* req, int status) {
    (void)status;
    close_conn((conn_t*)req->handle);
    free(req);
}

/* The peer's close_notify: ours back, then FIN after what is queued. */
static void finish_conn(conn_t* c) {
    (void)SSL_shutdown(c->ssl);
    uv_shutdown_t* req = malloc(sizeof(*req));
    if (flush(c) != 0 || req == NULL ||
        uv_shutdown(req, (uv_stream_t*)&c->handle, on_shutdown) != 0) {
        free(req);
        close_conn(c);
    }
}

/* Feeds ciphertext to OpenSSL, echoes the plaintext it yields (one SSL_write per full plain
   buffer), and writes what OpenSSL produced: handshake messages, tickets, records, alerts. */
static void on_ciphertext(conn_t* c, const char* data, size_t len) {
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        close_conn(c);
        return;
    }
    size_t used = 0;
    int err;
    for (;;) {
        int r = SSL_read(c->ssl, plain_buf + used, (int)(PLAIN_BUF_SIZE - used));
        if (r <= 0) {
            err = SSL_get_error(c->ssl, r);
            break;
        }
        used += (size_t)r;
        if (used == PLAIN_BUF_SIZE) {
            if (SSL_write(c->ssl, plain_buf, (int)used) != (int)used) {
                err = SSL_ERROR_SSL;
                break;
            }
            used = 0;
        }
    }
    if (used > 0 && SSL_write(c->ssl, plain_buf, (int)used) != (int)used) err = SSL_ERROR_SSL;
    if (err == SSL_ERROR_ZERO_RETURN) {
        finish_conn(c);
        return;
    }
    /* A failed handshake or a bad record leaves an alert to send: it goes out before the close. */
    if (flush(c) != 0 || err != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        close_conn(c);
    }
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    conn_t* c = (conn_t*)stream;
    if (nread > 0) {
        if (idle_timeout_ms > 0) uv_timer_again(&c->idle);
        on_ciphertext(c, buf->base, (size_t)nread);
    } else if (nread < 0) {
        close_conn(c); /* EOF without close_notify, or an error */
    }
}

static void on_connection(uv_stream_t* server, int status) {
    if (status < 0) {
        fprintf(stderr, "uv_tls_echo_server: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t* c = calloc(1, sizeof(*c));
    if (c == NULL) return;
    c->ssl = SSL_new(ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        SSL_free(c->ssl);
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        free(c);
        return;
    }
    /* An empty read BIO means "wait for more", not EOF. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    c->open_handles = 1;
    uv_tcp_init(loop, &c->handle);
    c->handle.data = c;
    if (idle_timeout_ms > 0) {
        start_idle_timer(loop, &c->idle, c, idle_timeout_ms, on_idle);
        c->open_handles = 2;
    }
    if (uv_accept(server, (uv_stream_t*)&c->handle) != 0) {
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c->handle, 1);
    if (uv_read_start((uv_stream_t*)&c->handle, alloc_cb, on_read) != 0) close_conn(c);
}

static void close_walk_cb(uv_handle_t* handle, void* arg) {
    (void)arg;
    if (uv_is_closing(handle)) return;
    if ((handle->type == UV_TCP && handle != (uv_handle_t*)&tcp_server) ||
        (handle->type == UV_TIMER && handle->data != NULL)) {
        uv_close(handle, on_conn_closed);
    } else {
        uv_close(handle, NULL);
    }
}

static void on_signal(uv_signal_t* handle, int signum) {
    (void)signum;
    uv_walk(handle->loop, close_walk_cb, NULL);
}

static SSL_CTX* make_ctx(const char* cert, const char* key) {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    if (c == NULL) return NULL;
    static const unsigned char sid_ctx[] = "uv_tls_echo_server";
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1 ||
        SSL_CTX_set_session_id_context(c, sid_ctx, sizeof(sid_ctx) - 1) != 1) {
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    return c;
}

static int usage(void) {
    fprintf(stderr,
            "usage: uv_tls_echo_server --tls-cert FILE --tls-key FILE [--bind HOST:PORT]\n"
            "                          [--idle-timeout SECONDS]\n");
    return 2;
}

int main(int argc, char** argv) {
    const char* bind_spec = "127.0.0.1:0";
    const char* cert = NULL;
    const char* key = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) {
            bind_spec = argv[++i];
        } else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--idle-timeout") == 0 && i + 1 < argc) {
            if (parse_idle_timeout(argv[++i], &idle_timeout_ms) != 0) return usage();
        } else {
            return usage();
        }
    }
    if (cert == NULL || key == NULL) return usage();
    ctx = make_ctx(cert, key);
    if (ctx == NULL) {
        fprintf(stderr, "uv_tls_echo_server: cannot use %s and %s: ", cert, key);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    loop = uv_default_loop();
    int status = serve_tcp("uv_tls_echo_server", bind_spec, &tcp_server, on_connection, on_signal);
    SSL_CTX_free(ctx);
    return status;
}
