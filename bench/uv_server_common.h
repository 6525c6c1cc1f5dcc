/* The command line and first output line the bench/ baseline servers share: --bind HOST:PORT
 * parsed into a socket address, and "listening on HOST:PORT" with the port actually bound. */
#ifndef PIPEWORKS_BENCH_UV_SERVER_COMMON_H
#define PIPEWORKS_BENCH_UV_SERVER_COMMON_H

#include <uv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
