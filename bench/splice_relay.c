/* splice_relay: a minimal TCP relay that moves bytes from socket to socket inside the kernel
 * (splice(2) through a pipe, no copy through user space), as a bound for bench/relay.sh: what
 * a relay on this machine can reach when the copies through the relay process are gone.
 *
 *   splice_relay TARGET_PORT     listens on 127.0.0.1 (port from the OS), prints
 *                                "listening on 127.0.0.1:PORT", relays each connection to
 *                                127.0.0.1:TARGET_PORT in a process of its own (as socat's fork)
 *
 * Linux only; plain epoll, no libuv and no pipeworks. Not a tool: no options, no limits. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* One direction: bytes read from `in` wait in the pipe until `out` takes them. */
struct direction {
    int in, out;
    int pipe[2];
    size_t in_pipe;
    int eof;      /* `in` reached its end */
    int shut;     /* and `out` was shut down after the last byte */
};

/* Moves what it can; 0 when it must wait for the sockets, -1 on an error. */
static int pump(struct direction* d) {
    for (;;) {
        if (d->in_pipe == 0 && !d->eof) {
            ssize_t n = splice(d->in, NULL, d->pipe[1], NULL, 1 << 20,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n == 0) d->eof = 1;
            else if (n < 0) return errno == EAGAIN ? 0 : -1;
            else d->in_pipe = (size_t)n;
        }
        if (d->in_pipe == 0) {
            if (d->eof && !d->shut) {
                shutdown(d->out, SHUT_WR);
                d->shut = 1;
            }
            return 0;
        }
        ssize_t w = splice(d->pipe[0], NULL, d->out, NULL, d->in_pipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (w < 0) return errno == EAGAIN ? 0 : -1;
        d->in_pipe -= (size_t)w;
    }
}

static void relay(int client, const struct sockaddr_in* target) {
    int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (upstream < 0 || connect(upstream, (const struct sockaddr*)target, sizeof *target) != 0) {
        perror("splice_relay: connect");
        _exit(1);
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(client, F_SETFL, O_NONBLOCK);
    fcntl(upstream, F_SETFL, O_NONBLOCK);
    struct direction d[2] = {{.in = client, .out = upstream}, {.in = upstream, .out = client}};
    for (int i = 0; i < 2; i++) {
        if (pipe2(d[i].pipe, O_NONBLOCK | O_CLOEXEC) != 0) _exit(1);
        fcntl(d[i].pipe[1], F_SETPIPE_SZ, 1 << 20);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};
    ev.data.fd = client;
    epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev);
    ev.data.fd = upstream;
    epoll_ctl(ep, EPOLL_CTL_ADD, upstream, &ev);
    /* Edge-triggered: every wake-up pumps both directions until the sockets say EAGAIN. */
    while (!(d[0].shut && d[1].shut)) {
        struct epoll_event events[2];
        if (epoll_wait(ep, events, 2, -1) < 0 && errno != EINTR) _exit(1);
        if (pump(&d[0]) < 0 || pump(&d[1]) < 0) _exit(1);
    }
    _exit(0);
}

int main(int argc, char** argv) {
    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: splice_relay TARGET_PORT\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in target = addr;
    target.sin_port = htons((unsigned short)atoi(argv[1]));
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 ||
        listen(listener, 128) != 0 || getsockname(listener, (struct sockaddr*)&addr, &len) != 0) {
        perror("splice_relay: listen");
        return 1;
    }
    printf("listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
    fflush(stdout);
    signal(SIGCHLD, SIG_IGN); /* no zombies */
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(listener);
            relay(client, &target);
        }
        close(client);
    }
}
