/* What the bench/ baseline servers share: --bind HOST:PORT parsed into a socket address,
 * --idle-timeout SECONDS and its per-connection timer, the first output line "listening on
 * HOST:PORT" with the port actually bound, and a TCP server's life on the default loop until
 * SIGINT or SIGTERM. */
#ifndef PIPEWORKS_BENCH_UV_SERVER_COMMON_H
#define PIPEWORKS_BENCH_UV_SERVER_COMMON_H

#include <uv.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --idle-timeout's SECONDS (0 to 86400) into milliseconds; -1 when it is not such a number. */
static inline int parse_idle_timeout(const char* arg, uint64_t* ms) {
    char* end;
    long s = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || s < 0 || s > 86400) return -1;
    *ms = (uint64_t)s * 1000;
    return 0;
}

/* The hand-written idle timeout: a repeating timer per connection (data: the connection),
   which every read restarts with uv_timer_again. */
static inline void start_idle_timer(uv_loop_t* loop, uv_timer_t* t, void* conn, uint64_t ms,
                                    uv_timer_cb on_idle) {
    uv_timer_init(loop, t);
    t->data = conn;
    uv_timer_start(t, on_idle, ms, ms);
}

/* "HOST:PORT" or "[V6HOST]:PORT" into a socket address. */
static inline int parse_bind(const char* spec, struct sockaddr_storage* out) {
    char host[INET6_ADDRSTRLEN + 1];
    const char* port_str;
    size_t host_len;
    if (spec[0] == '[') {
        const char* end = strchr(spec, ']');
        if (end == NULL || end[1] != ':') return -1;
        host_len = (size_t)(end - spec - 1);
        if (host_len >= sizeof(host)) return -1;
        memcpy(host, spec + 1, host_len);
        port_str = end + 2;
    } else {
        const char* colon = strrchr(spec, ':');
        if (colon == NULL) return -1;
        host_len = (size_t)(colon - spec);
        if (host_len >= sizeof(host)) return -1;
        memcpy(host, spec, host_len);
        port_str = colon + 1;
    }
    host[host_len] = '\0';
    char* port_end;
    long port = strtol(port_str, &port_end, 10);
    if (*port_str == '\0' || *port_end != '\0' || port < 0 || port > 65535) return -1;
    memset(out, 0, sizeof(*out));
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in*)out) == 0) return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6*)out) == 0) return 0;
    return -1;
}

static inline void print_listening(const struct sockaddr_storage* ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
        uv_ip6_name(a, host, sizeof(host));
        printf("listening on [%s]:%u\n", host, (unsigned)ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
        uv_ip4_name(a, host, sizeof(host));
        printf("listening on %s:%u\n", host, (unsigned)ntohs(a->sin_port));
    }
    fflush(stdout);
}

#define LISTEN_BACKLOG 511

/* Runs loop until it has no more handles; SIGINT and SIGTERM call on_signal, which must close
 * every handle. */
static inline void run_until_signal(uv_loop_t* loop, uv_signal_cb on_signal) {
    static uv_signal_t sig_int, sig_term;
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

/* Listens with server on bind_spec (on the default loop), prints the listening line, and runs
 * the loop; SIGINT and SIGTERM call on_signal, which must close every handle. The exit status:
 * 0 once the loop has ended, 1 when it cannot listen, 2 for a bad address. prog names the
 * program in error messages. */
static inline int serve_tcp(const char* prog, const char* bind_spec, uv_tcp_t* server,
                            uv_connection_cb on_connection, uv_signal_cb on_signal) {
    struct sockaddr_storage addr;
    if (parse_bind(bind_spec, &addr) != 0) {
        fprintf(stderr, "%s: bad --bind address: %s\n", prog, bind_spec);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t* loop = uv_default_loop();
    struct sockaddr_storage local;
    int local_len = (int)sizeof(local);
    uv_tcp_init(loop, server);
    int r = uv_tcp_bind(server, (const struct sockaddr*)&addr, 0);
    if (r == 0) r = uv_listen((uv_stream_t*)server, LISTEN_BACKLOG, on_connection);
    if (r == 0) r = uv_tcp_getsockname(server, (struct sockaddr*)&local, &local_len);
    if (r != 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, bind_spec, uv_strerror(r));
        return 1;
    }
    print_listening(&local);
    run_until_signal(loop, on_signal);
    return 0;
}

#endif
