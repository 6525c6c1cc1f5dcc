// idle_conns: opens many idle TCP connections to a server and holds them, so that the
// server's memory per connection can be measured (bench/run.sh reads its VmRSS).
//
//   idle_conns --target HOST:PORT [--count K] [--concurrency C] [--sources N] [--settle SECONDS]
//              [--connect-timeout SECONDS] [--max-time SECONDS] [--no-stdin]
//
// Opens K connections (default 10000), at most C connects outstanding at a time (default 256,
// well under the server's listen backlog). With --sources N > 1 (IPv4 only) connection i is
// bound to 127.0.0.(1 + i % N) first, for when one source address runs short of ephemeral
// ports. No byte is ever sent. Once every connect has completed, it waits the settle time
// (default 1 s), then prints one line on stdout:
//   connected=K failed=0 closed=0 connect_ms=...
// and holds the connections until stdin reaches end of file (unless --no-stdin), SIGINT or
// SIGTERM arrives, or --max-time (default 300 s, counted from the start) passes. It raises its
// own RLIMIT_NOFILE soft limit to the hard limit (and the hard limit, when it can, if that is
// still too low). Exit status 0 when every connection was established and none was closed by
// the server while held.
#include <uv.h>

#include "bench_args.hpp"

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using bench::parse_number;
using bench::parse_target;

struct Options {
    std::string target;
    int count = 10000;
    int concurrency = 256;
    int sources = 1;
    double settle = 1.0;
    double connect_timeout = 60.0;
    double max_time = 300.0;
    bool watch_stdin = true;
};

struct Conn {
    uv_tcp_t tcp;
    uv_connect_t req;
    int index = 0;
    bool inited = false;
    bool up = false;
};

struct App {
    Options opt;
    uv_loop_t* loop = nullptr;
    sockaddr_storage target{};
    std::vector<std::unique_ptr<Conn>> conns;
    int started = 0;
    int pending = 0;
    int connected = 0;
    int failed = 0;
    int closed = 0;  // closed by the server after connecting
    bool stopping = false;
    uint64_t start_ns = 0;
    uint64_t connect_ns = 0;
    uv_timer_t settle_timer{};
    uv_timer_t connect_timer{};
    uv_timer_t max_timer{};
    uv_signal_t sig_int{};
    uv_signal_t sig_term{};
    uv_async_t stdin_closed{};
};

App app;
char discard_buf[4096];

void close_walk_cb(uv_handle_t* handle, void*) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
}

void stop() {
    if (app.stopping) return;
    app.stopping = true;
    uv_walk(app.loop, close_walk_cb, nullptr);
}

void start_more();

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
    auto& c = *static_cast<Conn*>(stream->data);
    if (nread >= 0 || app.stopping) return;  // data from an echo server: not expected, ignored
    if (app.closed++ < 5) {
        std::fprintf(stderr, "idle_conns: connection %d closed by the server: %s\n", c.index,
                     uv_strerror(static_cast<int>(nread)));
    }
    c.up = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), nullptr);
}

void alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
    buf->base = discard_buf;
    buf->len = sizeof(discard_buf);
}

void on_settled(uv_timer_t*) {
    std::printf("connected=%d failed=%d closed=%d connect_ms=%.0f\n", app.connected - app.closed,
                app.failed, app.closed, static_cast<double>(app.connect_ns - app.start_ns) / 1e6);
    std::fflush(stdout);
    if (app.failed > 0) {
        stop();
        return;
    }
    if (app.opt.watch_stdin) {
        // A blocking reader thread works for any kind of stdin (pipe, tty, file, /dev/null).
        std::thread([] {
            char buf[256];
            for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
                if (n == 0 || (n < 0 && errno != EINTR)) break;
            }
            uv_async_send(&app.stdin_closed);
        }).detach();
    }
}

void all_attempted() {
    uv_timer_stop(&app.connect_timer);
    app.connect_ns = uv_hrtime();
    uv_timer_start(&app.settle_timer, on_settled, static_cast<uint64_t>(app.opt.settle * 1000.0),
                   0);
}

void on_connect(uv_connect_t* req, int status) {
    auto& c = *static_cast<Conn*>(req->data);
    app.pending--;
    if (app.stopping) return;
    if (status == 0) {
        c.up = true;
        app.connected++;
        int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp), alloc_cb, on_read);
        if (r != 0) std::fprintf(stderr, "idle_conns: read_start: %s\n", uv_strerror(r));
    } else {
        if (app.failed++ < 5) {
            std::fprintf(stderr, "idle_conns: connect %d: %s\n", c.index, uv_strerror(status));
        }
        uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), nullptr);
    }
    start_more();
    if (app.connected + app.failed == app.opt.count) all_attempted();
}

int open_one(Conn& c) {
    const auto* target = reinterpret_cast<const sockaddr*>(&app.target);
    int r = uv_tcp_init_ex(app.loop, &c.tcp, app.target.ss_family);
    if (r != 0) return r;
    c.inited = true;
    c.tcp.data = &c;
    c.req.data = &c;
    if (app.opt.sources > 1 && app.target.ss_family == AF_INET) {
        // Pick the port at connect time, per destination, instead of reserving one at bind.
        uv_os_fd_t fd;
        if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c.tcp), &fd) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        }
        sockaddr_in src{};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + static_cast<uint32_t>(c.index % app.opt.sources));
        r = uv_tcp_bind(&c.tcp, reinterpret_cast<const sockaddr*>(&src), 0);
        if (r != 0) return r;
    }
    return uv_tcp_connect(&c.req, &c.tcp, target, on_connect);
}

void start_more() {
    while (!app.stopping && app.pending < app.opt.concurrency && app.started < app.opt.count) {
        auto c = std::make_unique<Conn>();
        c->index = app.started++;
        int r = open_one(*c);
        Conn& ref = *c;
        app.conns.push_back(std::move(c));
        if (r != 0) {
            if (app.failed++ < 5) {
                std::fprintf(stderr, "idle_conns: connect %d: %s\n", ref.index, uv_strerror(r));
            }
            if (ref.inited && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&ref.tcp))) {
                uv_close(reinterpret_cast<uv_handle_t*>(&ref.tcp), nullptr);
            }
            if (app.connected + app.failed == app.opt.count) all_attempted();
            if (r == UV_EMFILE || r == UV_ENFILE) {
                std::fprintf(stderr, "idle_conns: out of file descriptors, stopping\n");
                stop();
            }
            continue;
        }
        app.pending++;
    }
}

void on_connect_timeout(uv_timer_t*) {
    std::fprintf(stderr, "idle_conns: only %d of %d connects completed after %.0f s\n",
                 app.connected + app.failed, app.opt.count, app.opt.connect_timeout);
    std::printf("connected=%d failed=%d closed=%d connect_ms=-1\n", app.connected - app.closed,
                app.opt.count - (app.connected - app.closed), app.closed);
    std::fflush(stdout);
    app.failed = app.opt.count - app.connected;
    stop();
}

void on_max_time(uv_timer_t*) {
    std::fprintf(stderr, "idle_conns: --max-time reached, closing\n");
    stop();
}

void on_signal(uv_signal_t*, int) {
    stop();
}
void on_stdin_closed(uv_async_t*) {
    stop();
}

bool raise_nofile(rlim_t needed) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur >= needed) return true;
    rlimit more{needed, std::max(needed, rl.rlim_max)};  // needs privilege
    return setrlimit(RLIMIT_NOFILE, &more) == 0;
}

int usage(const std::string& why) {
    std::fprintf(stderr,
                 "idle_conns: %s\n"
                 "usage: idle_conns --target HOST:PORT [--count K] [--concurrency C] "
                 "[--sources N]\n"
                 "                  [--settle SECONDS] [--connect-timeout SECONDS] "
                 "[--max-time SECONDS] [--no-stdin]\n",
                 why.c_str());
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Options& o = app.opt;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--no-stdin") {
            o.watch_stdin = false;
            continue;
        }
        if (i + 1 >= argc) return usage("missing value for " + a);
        const char* v = argv[++i];
        double x = 0;
        bool ok = true;
        if (a == "--target") {
            o.target = v;
        } else if (a == "--count") {
            ok = parse_number(v, 1, 1000000, &x);
            o.count = static_cast<int>(x);
        } else if (a == "--concurrency") {
            ok = parse_number(v, 1, 100000, &x);
            o.concurrency = static_cast<int>(x);
        } else if (a == "--sources") {
            ok = parse_number(v, 1, 254, &x);
            o.sources = static_cast<int>(x);
        } else if (a == "--settle") {
            ok = parse_number(v, 0, 600, &o.settle);
        } else if (a == "--connect-timeout") {
            ok = parse_number(v, 0.001, 3600, &o.connect_timeout);
        } else if (a == "--max-time") {
            ok = parse_number(v, 0.001, 86400, &o.max_time);
        } else {
            return usage("unknown option " + a);
        }
        if (!ok) return usage("bad value for " + a + ": " + v);
    }
    if (o.target.empty()) return usage("--target is required");
    if (!parse_target(o.target, &app.target)) return usage("bad --target (HOST:PORT, [V6]:PORT)");

    const auto needed = static_cast<rlim_t>(o.count) + 64;
    if (!raise_nofile(needed)) {
        rlimit rl{};
        getrlimit(RLIMIT_NOFILE, &rl);
        std::fprintf(stderr, "idle_conns: RLIMIT_NOFILE is %llu, %d connections need %llu\n",
                     static_cast<unsigned long long>(rl.rlim_cur), o.count,
                     static_cast<unsigned long long>(needed));
        return 1;
    }

    std::signal(SIGPIPE, SIG_IGN);
    app.loop = uv_default_loop();
    uv_timer_init(app.loop, &app.settle_timer);
    uv_timer_init(app.loop, &app.connect_timer);
    uv_timer_init(app.loop, &app.max_timer);
    uv_signal_init(app.loop, &app.sig_int);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_init(app.loop, &app.sig_term);
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_async_init(app.loop, &app.stdin_closed, on_stdin_closed);
    uv_timer_start(&app.connect_timer, on_connect_timeout,
                   static_cast<uint64_t>(o.connect_timeout * 1000.0), 0);
    uv_timer_start(&app.max_timer, on_max_time, static_cast<uint64_t>(o.max_time * 1000.0), 0);

    app.conns.reserve(static_cast<size_t>(o.count));
    app.start_ns = uv_hrtime();
    start_more();
    uv_run(app.loop, UV_RUN_DEFAULT);
    // The loop is left open: the stdin thread may still be blocked in read() and only process
    // exit ends it.

    const bool ok = app.connected == o.count && app.failed == 0 && app.closed == 0;
    std::fprintf(stderr, "idle_conns: done, connected=%d failed=%d closed=%d\n", app.connected,
                 app.failed, app.closed);
    return ok ? 0 : 1;
}
