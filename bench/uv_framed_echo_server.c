/* uv_framed_echo_server: the baselines of the framed-echo benchmark in bench/.
 *
 * A plain libuv server, with no pipeworks code in it, that speaks the 4-byte length framing:
 * every message on the wire is a 4-byte big-endian length L followed by L bytes. Each frame
 * received is echoed as the same frame (same prefix, same bytes), so the echoed stream equals
 * the stream received. Two ways of writing the echo, selected with --mode:
 *
 *   each:      one uv_write per complete frame, with its own request and its own copy of the
 *              frame: the way a typical hand-written server answers message by message.
 *   gathered:  every frame completed by one read is copied into one buffer, written with
 *              uv_try_write, and the unsent remainder copied into a single uv_write: one write
 *              per read, the bound for a server that hands out whole messages.
 *
 * Common to both: one 64 KiB read buffer for the loop (every byte of a read is consumed or
 * copied before the read callback returns), a per-connection carry buffer for a frame split
 * across reads, frames larger than 16 MiB close the connection, TCP_NODELAY, backlog 511,
 * reading paused while more than 1 MiB is queued for a peer that does not read and resumed
 * below 256 KiB. EOF: shut down the write side after the queued writes (a partial frame left
 * in the carry is dropped), then close.
 *
 * Usage: uv_framed_echo_server --mode each|gathered [--bind HOST:PORT]
 *        (default 127.0.0.1:0, IPv6 as [::1]:0)
 * The first line on stdout is "listening on HOST:PORT" with the real port.
 * SIGINT / SIGTERM close everything and exit 0.
 */
#include "uv_server_common.h"

#include <uv.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUF_SIZE (64 * 1024)
#define WRITE_QUEUE_HIGH (1024 * 1024)
#define WRITE_QUEUE_LOW (256 * 1024)
#define HEADER_SIZE 4
#define MAX_FRAME (16 * 1024 * 1024) /* most payload bytes of one frame */
#define CARRY_KEEP (64 * 1024)       /* a larger carry buffer is freed once emptied */
#define GATHER_KEEP (1024 * 1024)    /* a larger gather buffer is freed after the write */

enum mode { MODE_EACH, MODE_GATHERED };

typedef struct {
    uv_tcp_t handle; /* first member: a handle pointer is a conn_t pointer */
    int paused;      /* reading stopped because too much is queued for the peer */
    char* carry;     /* the start of a frame that the next reads complete */
    size_t carry_len;
    size_t carry_cap;
} conn_t;

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
    char data[];
} write_req_t;

static enum mode mode = MODE_EACH;
static uv_loop_t* loop;
static uv_tcp_t tcp_server;
static char read_buf[READ_BUF_SIZE]; /* one loop, one read at a time */
static char* gather;                 /* gathered mode: the frames completed by the current read */
static size_t gather_len;
static size_t gather_cap;

static uint32_t get_be32(const char* p) {
    const unsigned char* u = (const unsigned char*)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

/* Grows *buf to hold at least `need` bytes, keeping its contents: to exactly `need` when `exact`
 * (a carried frame never needs more), otherwise at least doubling. 0, or -1 when out of memory. */
static int reserve(char** buf, size_t* cap, size_t need, int exact) {
    if (*cap >= need) return 0;
    size_t n = exact ? need : *cap * 2;
    if (n < need) n = need;
    char* p = realloc(*buf, n);
    if (p == NULL) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

/* ---------------------------------------------------------------- connections */

static void on_conn_closed(uv_handle_t* handle) {
    conn_t* c = (conn_t*)handle;
    free(c->carry);
    free(c);
}

static void close_conn(conn_t* c) {
    if (!uv_is_closing((uv_handle_t*)&c->handle)) {
        uv_close((uv_handle_t*)&c->handle, on_conn_closed);
    }
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

/* Queues a copy of data[0, len) with uv_write. 0, or -1 when the connection was closed. */
static int write_copy(conn_t* c, const char* data, size_t len) {
    uv_stream_t* stream = (uv_stream_t*)&c->handle;
    write_req_t* wr = malloc(sizeof(*wr) + len);
    if (wr == NULL) {
        close_conn(c);
        return -1;
    }
    memcpy(wr->data, data, len);
    wr->buf = uv_buf_init(wr->data, (unsigned int)len);
    if (uv_write(&wr->req, stream, &wr->buf, 1, on_write) != 0) {
        free(wr);
        close_conn(c);
        return -1;
    }
    if (!c->paused && uv_stream_get_write_queue_size(stream) > WRITE_QUEUE_HIGH) {
        uv_read_stop(stream);
        c->paused = 1;
    }
    return 0;
}

/* One complete frame (header included) to echo. 0, or -1 when the connection was closed. */
static int on_frame(conn_t* c, const char* frame, size_t len) {
    if (mode == MODE_EACH) return write_copy(c, frame, len);
    if (reserve(&gather, &gather_cap, gather_len + len, 0) != 0) {
        close_conn(c);
        return -1;
    }
    memcpy(gather + gather_len, frame, len);
    gather_len += len;
    return 0;
}

/* Gathered mode: writes what the current read completed, uv_try_write first. */
static void flush_gathered(conn_t* c) {
    if (gather_len == 0) return;
    uv_buf_t buf = uv_buf_init(gather, (unsigned int)gather_len);
    int n = uv_try_write((uv_stream_t*)&c->handle, &buf, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    } else if (n < 0) {
        close_conn(c);
    }
    if (n >= 0 && (size_t)n < gather_len) write_copy(c, gather + n, gather_len - (size_t)n);
    gather_len = 0;
    if (gather_cap > GATHER_KEEP) {
        free(gather);
        gather = NULL;
        gather_cap = 0;
    }
}

static void drop_carry(conn_t* c) {
    c->carry_len = 0;
    if (c->carry_cap > CARRY_KEEP) {
        free(c->carry);
        c->carry = NULL;
        c->carry_cap = 0;
    }
}

/* Appends data[0, len) to the carry buffer, which must hold `need` bytes. 0 or -1. */
static int carry_append(conn_t* c, const char* data, size_t len, size_t need) {
    if (reserve(&c->carry, &c->carry_cap, need, 1) != 0) {
        close_conn(c);
        return -1;
    }
    memcpy(c->carry + c->carry_len, data, len);
    c->carry_len += len;
    return 0;
}

/* Consumes one read: completes the carried frame, echoes every whole frame in the buffer and
 * carries the incomplete tail. Returns 0; 1 for a frame over the limit (the frames before it
 * are echoed, then the connection must be closed); -1 when the connection was closed. */
static int parse(conn_t* c, const char* p, size_t left) {
    if (c->carry_len > 0) {
        if (c->carry_len < HEADER_SIZE) {
            size_t take = HEADER_SIZE - c->carry_len;
            if (take > left) take = left;
            if (carry_append(c, p, take, HEADER_SIZE) != 0) return -1;
            p += take;
            left -= take;
            if (c->carry_len < HEADER_SIZE) return 0;
        }
        uint32_t body = get_be32(c->carry);
        if (body > MAX_FRAME) return 1;
        size_t frame = HEADER_SIZE + (size_t)body;
        size_t take = frame - c->carry_len;
        if (take > left) take = left;
        if (carry_append(c, p, take, frame) != 0) return -1;
        p += take;
        left -= take;
        if (c->carry_len < frame) return 0;
        if (on_frame(c, c->carry, frame) != 0) return -1;
        drop_carry(c);
    }
    while (left >= HEADER_SIZE) {
        uint32_t body = get_be32(p);
        if (body > MAX_FRAME) return 1;
        size_t frame = HEADER_SIZE + (size_t)body;
        if (left < frame) {
            /* Reserve the whole frame now: the next reads only append. */
            return carry_append(c, p, left, frame);
        }
        if (on_frame(c, p, frame) != 0) return -1;
        p += frame;
        left -= frame;
    }
    if (left > 0) return carry_append(c, p, left, HEADER_SIZE);
    return 0;
}

static void on_shutdown(uv_shutdown_t* req, int status) {
    (void)status;
    close_conn((conn_t*)req->handle);
    free(req);
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    conn_t* c = (conn_t*)stream;
    if (nread > 0) {
        int r = parse(c, buf->base, (size_t)nread);
        if (r < 0) {
            gather_len = 0; /* the connection is closed: nothing to write */
            return;
        }
        if (mode == MODE_GATHERED) flush_gathered(c);
        if (r > 0) close_conn(c); /* a frame over MAX_FRAME */
    } else if (nread == UV_EOF) {
        uv_shutdown_t* req = malloc(sizeof(*req));
        if (req == NULL || uv_shutdown(req, stream, on_shutdown) != 0) {
            free(req);
            close_conn(c);
        }
    } else if (nread < 0) {
        close_conn(c);
    }
}

static void on_connection(uv_stream_t* server, int status) {
    if (status < 0) {
        fprintf(stderr, "uv_framed_echo_server: accept: %s\n", uv_strerror(status));
        return;
    }
    conn_t* c = calloc(1, sizeof(*c));
    if (c == NULL) return;
    uv_tcp_init(loop, &c->handle);
    if (uv_accept(server, (uv_stream_t*)&c->handle) != 0) {
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c->handle, 1);
    if (uv_read_start((uv_stream_t*)&c->handle, alloc_cb, on_read) != 0) close_conn(c);
}

/* ---------------------------------------------------------------- main */

static void close_walk_cb(uv_handle_t* handle, void* arg) {
    (void)arg;
    if (uv_is_closing(handle)) return;
    if (handle->type == UV_TCP && handle != (uv_handle_t*)&tcp_server) {
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
    fprintf(stderr, "usage: uv_framed_echo_server --mode each|gathered [--bind HOST:PORT]\n");
    return 2;
}

int main(int argc, char** argv) {
    const char* bind_spec = "127.0.0.1:0";
    int have_mode = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
            const char* m = argv[++i];
            if (strcmp(m, "each") == 0) {
                mode = MODE_EACH;
            } else if (strcmp(m, "gathered") == 0) {
                mode = MODE_GATHERED;
            } else {
                return usage();
            }
            have_mode = 1;
        } else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) {
            bind_spec = argv[++i];
        } else {
            return usage();
        }
    }
    if (!have_mode) return usage();
    loop = uv_default_loop();
    int status =
        serve_tcp("uv_framed_echo_server", bind_spec, &tcp_server, on_connection, on_signal);
    free(gather);
    return status;
}
