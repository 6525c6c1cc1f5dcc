// sync_bench [--server HOST:PORT] [--threads T] [--seconds S] [--size BYTES] [--rounds R]
// Request/reply round trips per second from T threads (default 8), each with its own
// connection, through pipeworks::sync against a client written by hand on blocking POSIX
// sockets (the baseline), in the same run against the same server: a 4-byte big-endian
// length-prefixed echo. Without --server the bench runs a pipeworks framed echo server on a loop
// thread of its own; with it, any framed echo server (bench/uv_framed_echo_server,
// examples/echo_server --framing length). Each round measures the baseline, then the facade
// twice, S seconds each (default 2); R rounds (default 2). Every reply is checked byte for byte; a
// wrong or missing one marks the run FAILED (exit 1). Prints each measurement, the best of each,
// and the ratios sync / baseline, for send() then recv() and for send_recv() (one call).
#include "bench_args.hpp"

#include <pipeworks/pipeworks.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using Clock = std::chrono::steady_clock;

namespace {

struct Settings {
    std::string server;
    int threads = 8;
    double seconds = 2;
    std::size_t size = 64;
    int rounds = 2;
};

std::string request_bytes(std::size_t size, int thread) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>('a' + (i + thread) % 26);
    return s;
}

// ---- The baseline: blocking POSIX sockets, nothing else.

bool write_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

bool read_all(int fd, char* p, std::size_t n) {
    while (n > 0) {
        ssize_t r = ::recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

// Round trips until `until`; -1 on a failure.
long posix_client(const sockaddr_storage& to, const std::string& body, Clock::time_point until) {
    int fd = ::socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    // The same bounds the facade has: no call may hang the bench.
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    socklen_t len = to.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), len) != 0) {
        ::close(fd);
        return -1;
    }
    std::string frame(4 + body.size(), '\0');
    const auto n = static_cast<std::uint32_t>(body.size());
    frame[0] = static_cast<char>(n >> 24);
    frame[1] = static_cast<char>(n >> 16);
    frame[2] = static_cast<char>(n >> 8);
    frame[3] = static_cast<char>(n);
    std::memcpy(frame.data() + 4, body.data(), body.size());
    std::string reply(frame.size(), '\0');
    long count = 0;
    while (Clock::now() < until) {
        if (!write_all(fd, frame.data(), frame.size()) ||
            !read_all(fd, reply.data(), reply.size()) || reply != frame) {
            count = -1;
            break;
        }
        ++count;
    }
    ::close(fd);
    return count;
}

// ---- The facade.

// send() then recv(): two hand-overs per round trip; or send_recv(): one.
long sync_client(const std::string& to, const std::string& body, Clock::time_point until,
                 bool one_call) {
    NetConf conf;
    conf.framer = Framer::message();
    auto pipe = sync::Pipe::connect(to, conf);
    if (!pipe) return -1;
    long count = 0;
    constexpr std::chrono::seconds kWait{5};
    while (Clock::now() < until) {
        RecvResult r;
        if (one_call) {
            auto got = pipe->send_recv(body, kWait);
            if (!got) return -1;
            r = std::move(*got);
        } else {
            if (pipe->send(body)) return -1;
            r = pipe->recv(kWait);
        }
        if (!r || r.message.data != body) return -1;
        ++count;
    }
    return pipe->close() ? count : -1;
}

// Runs `client` on every thread for the bench's duration; round trips per second, or -1.
template <class Client>
double measure(const Settings& s, Client client) {
    std::vector<long> counts(static_cast<std::size_t>(s.threads), 0);
    std::vector<std::thread> pool;
    const auto start = Clock::now();
    const auto until = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(s.seconds));
    for (int t = 0; t < s.threads; ++t)
        pool.emplace_back([&, t] {
            counts[static_cast<std::size_t>(t)] = client(request_bytes(s.size, t), until);
        });
    for (auto& th : pool) th.join();
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    long total = 0;
    for (long c : counts) {
        if (c < 0) return -1;
        total += c;
    }
    return static_cast<double>(total) / secs;
}

int usage(const char* why) {
    std::fprintf(stderr,
                 "sync_bench: %s\n"
                 "usage: sync_bench [--server HOST:PORT] [--threads T] [--seconds S] "
                 "[--size BYTES] [--rounds R]\n",
                 why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) return usage((a + " needs a value").c_str());
        const char* v = argv[++i];
        double d = 0;
        if (a == "--server") {
            s.server = v;
        } else if (a == "--threads" && bench::parse_number(v, 1, 256, &d)) {
            s.threads = static_cast<int>(d);
        } else if (a == "--seconds" && bench::parse_number(v, 0.1, 600, &d)) {
            s.seconds = d;
        } else if (a == "--size" && bench::parse_number(v, 1, 1 << 20, &d)) {
            s.size = static_cast<std::size_t>(d);
        } else if (a == "--rounds" && bench::parse_number(v, 1, 100, &d)) {
            s.rounds = static_cast<int>(d);
        } else {
            return usage(("bad option or value: " + a + " " + v).c_str());
        }
    }

    // The in-process server: a pipeworks framed echo on a loop thread of its own.
    Loop server_loop;
    PipePtr server;
    std::thread server_thread;
    std::atomic<bool> stop{false};
    if (s.server.empty()) {
        NetConf conf;
        conf.framer = Framer::message();
        auto l = Pipe::listen(server_loop, Address::loopback(Family::ipv4), conf);
        if (!l) {
            std::fprintf(stderr, "sync_bench: listen: %s\n", l.error().message.c_str());
            return 1;
        }
        server = *l;
        server->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });
        s.server = server->local_address().to_string();
        server_thread = std::thread([&] {
            while (!stop) server_loop.run_until([&] { return stop.load(); }, std::chrono::hours(1));
        });
    }
    sockaddr_storage to{};
    if (!bench::parse_target(s.server, &to)) return usage("--server: HOST:PORT, numeric");

    std::printf("sync_bench: %d threads, %zu-byte requests, %.1f s per measurement, server %s%s\n",
                s.threads, s.size, s.seconds, s.server.c_str(),
                server ? " (in-process pipeworks framed echo)" : "");
    double best_posix = 0, best_sync = 0, best_one = 0;
    bool failed = false;
    for (int r = 1; r <= s.rounds && !failed; ++r) {
        double posix = measure(s, [&](const std::string& body, Clock::time_point until) {
            return posix_client(to, body, until);
        });
        double facade = measure(s, [&](const std::string& body, Clock::time_point until) {
            return sync_client(s.server, body, until, false);
        });
        double one = measure(s, [&](const std::string& body, Clock::time_point until) {
            return sync_client(s.server, body, until, true);
        });
        std::printf(
            "round %d: posix blocking sockets %.0f/s, pipeworks::sync send+recv %.0f/s, "
            "send_recv %.0f/s (round trips per second)\n",
            r, posix, facade, one);
        if (posix < 0 || facade < 0 || one < 0) failed = true;
        best_posix = std::max(best_posix, posix);
        best_sync = std::max(best_sync, facade);
        best_one = std::max(best_one, one);
    }
    if (server) {
        server_loop.post([&] {
            server->close();
            stop = true;
        });
        server_thread.join();
        server.reset();
    }
    if (failed) {
        std::printf("FAILED: a reply was wrong or missing\n");
        return 1;
    }
    std::printf(
        "best: posix %.0f/s, sync send+recv %.0f/s (ratio %.2f), sync send_recv %.0f/s "
        "(ratio %.2f)\n",
        best_posix, best_sync, best_sync / best_posix, best_one, best_one / best_posix);
    return 0;
}
