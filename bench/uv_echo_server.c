/* uv_echo_server: the baseline for the benchmarks in bench/.
 *
 * A plain libuv echo server written the usual way, with no pipeworks code in it:
 *   TCP:  one 64 KiB read buffer malloc'd in alloc_cb per read, each chunk echoed with
 *         uv_try_write, the unsent remainder copied into a uv_write request. Reading pauses
 *         while more than 1 MiB is queued for a peer that does not read, and resumes below
 *         256 KiB. EOF: shut down the write side after the queued writes, then close.
 *   UDP:  every datagram is sent back to its source (uv_udp_try_send, a copy via uv_udp_send
 *         when the socket buffer is full).
 *
 *   --idle-timeout SECONDS: TCP connections silent that long are closed, with one timer per
 *         connection restarted by each read, as a server with idle timeouts is written by
 *         hand; to compare with echo_server's default idle deadline on equal terms.
 *
 * Usage: uv_echo_server [--udp] [--bind HOST:PORT] [--idle-timeout SECONDS]
 *        (default 127.0.0.1:0, IPv6 as [::1]:0; no idle timeout)
 * The first line on stdout is "listening on HOST:PORT" with the real port.
 * SIGINT / SIGTERM close everything and exit 0.
 */
#include "uv_server_common.h"

#include <uv.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF_SIZE (64 * 1024)
#define WRITE_QUEUE_HIGH (1024 * 1024)
#define WRITE_QUEUE_LOW (256 * 1024)

typedef struct {
    uv_tcp_t handle; /* first member: a handle pointer is a conn_t pointer */
    int paused;      /* reading stopped because too much is queued for the peer */
    /* --idle-timeout: the hand-written way, one timer per connection restarted by every read
       (uv_timer_again); the connection is freed once both handles have closed. */
    uv_timer_t idle;
    int open_handles;
} conn_t;

static uint64_t idle_timeout_ms; /* 0: no idle timeout */

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} write_req_t;

typedef struct {
    uv_udp_send_t req;
    uv_buf_t buf;
    char data[];
} udp_send_req_t;

static uv_loop_t* loop;
static uv_tcp_t tcp_server;
static uv_udp_t udp_server;
static char udp_buf[READ_BUF_SIZE];

/* ---------------------------------------------------------------- TCP */

static void on_conn_closed(uv_handle_t* handle) {
    conn_t* c = (conn_t*)handle->data;
    if (--c->open_handles == 0) free(c);
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
    buf->base = malloc(READ_BUF_SIZE);
    buf->len = buf->base != NULL ? READ_BUF_SIZE : 0;
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

static void echo(conn_t* c, const char* data, size_t len) {
    uv_stream_t* stream = (uv_stream_t*)&c->handle;
    uv_buf_t buf = uv_buf_init((char*)data, (unsigned int)len);
    int n = uv_try_write(stream, &buf, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    } else if (n < 0) {
        close_conn(c);
        return;
    }
    if ((size_t)n == len) return;

    size_t rest = len - (size_t)n;
    write_req_t* wr = malloc(sizeof(*wr) + rest);
    if (wr == NULL) {
        close_conn(c);
        return;
    }
    memcpy(wr->data, data + n, rest);
    wr->buf = uv_buf_init(wr->data, (unsigned int)rest);
    if (uv_write(&wr->req, stream, &wr->buf, 1, on_write) != 0) {
        free(wr);
        close_conn(c);
        return;
    }
    if (uv_stream_get_write_queue_size(stream) > WRITE_QUEUE_HIGH) {
        uv_read_stop(stream);
        c->paused = 1;
    }
}

static void on_shutdown(uv_shutdown_t* req, int status) {
    (void)status;
    close_conn((conn_t*)req->handle);
    free(req);
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    conn_t* c = (conn_t*)stream;
    if (nread > 0) {
        if (idle_timeout_ms > 0) uv_timer_again(&c->idle);
        echo(c, buf->base, (size_t)nread);
    } else if (nread == UV_EOF) {
        uv_shutdown_t* req = malloc(sizeof(*req));
        if (req == NULL || uv_shutdown(req, stream, on_shutdown) != 0) {
            free(req);
            close_conn(c);
        }
    } else if (nread < 0) {
        close_conn(c);
    }
    free(buf->base);
}

static void on_connection(uv_stream_t* server, int status) {
    if (status < 0) {
        fprintf(stderr, "uv_echo_server: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t* c = malloc(sizeof(*c));
    if (c == NULL) return;
    c->paused = 0;
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

/* ---------------------------------------------------------------- UDP */

static void udp_alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) {
    (void)handle;
    (void)suggested;
    buf->base = udp_buf;
    buf->len = sizeof(udp_buf);
}

static void on_udp_sent(uv_udp_send_t* req, int status) {
    (void)status; /* a datagram that could not be sent is lost, as UDP allows */
    free(req);
}

static void on_udp_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                        const struct sockaddr* addr, unsigned flags) {
    if (nread < 0) {
        fprintf(stderr, "uv_echo_server: udp recv: %s\n", uv_strerror((int)nread));
        return;
    }
    if (addr == NULL || (flags & UV_UDP_PARTIAL)) return; /* nothing read / truncated */

    uv_buf_t out = uv_buf_init(buf->base, (unsigned int)nread);
    int r = uv_udp_try_send(handle, &out, 1, addr);
    if (r != UV_EAGAIN) return; /* sent, or refused (then lost, as any datagram may be) */

    udp_send_req_t* sr = malloc(sizeof(*sr) + (size_t)nread);
    if (sr == NULL) return;
    memcpy(sr->data, buf->base, (size_t)nread);
    sr->buf = uv_buf_init(sr->data, (unsigned int)nread);
    if (uv_udp_send(&sr->req, handle, &sr->buf, 1, addr, on_udp_sent) != 0) free(sr);
}

/* ---------------------------------------------------------------- main */

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

static int usage(void) {
    fprintf(stderr, "usage: uv_echo_server [--udp] [--bind HOST:PORT] [--idle-timeout SECONDS]\n");
    return 2;
}

int main(int argc, char** argv) {
    const char* bind_spec = "127.0.0.1:0";
    int udp = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--udp") == 0) {
            udp = 1;
        } else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) {
            bind_spec = argv[++i];
        } else if (strcmp(argv[i], "--idle-timeout") == 0 && i + 1 < argc) {
            if (parse_idle_timeout(argv[++i], &idle_timeout_ms) != 0) return usage();
        } else {
            return usage();
        }
    }
    struct sockaddr_storage addr;
    if (parse_bind(bind_spec, &addr) != 0) {
        fprintf(stderr, "uv_echo_server: bad --bind address: %s\n", bind_spec);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();

    int r;
    struct sockaddr_storage local;
    int local_len = (int)sizeof(local);
    if (udp) {
        uv_udp_init(loop, &udp_server);
        r = uv_udp_bind(&udp_server, (const struct sockaddr*)&addr, 0);
        if (r == 0) r = uv_udp_recv_start(&udp_server, udp_alloc_cb, on_udp_recv);
        if (r == 0) r = uv_udp_getsockname(&udp_server, (struct sockaddr*)&local, &local_len);
    } else {
        uv_tcp_init(loop, &tcp_server);
        r = uv_tcp_bind(&tcp_server, (const struct sockaddr*)&addr, 0);
        if (r == 0) r = uv_listen((uv_stream_t*)&tcp_server, LISTEN_BACKLOG, on_connection);
        if (r == 0) r = uv_tcp_getsockname(&tcp_server, (struct sockaddr*)&local, &local_len);
    }
    if (r != 0) {
        fprintf(stderr, "uv_echo_server: %s: %s\n", bind_spec, uv_strerror(r));
        return 1;
    }
    print_listening(&local);
    run_until_signal(loop, on_signal);
    return 0;
}
