// Limits: what keeps a server alive against misbehaving peers. Read backpressure against a peer
// that sends without reading, the idle, frame and close timeouts, max_clients, running out of
// file descriptors while accepting, and a UDP queue bounded in bytes that empty datagrams
// cannot grow. The misbehaving peers are raw POSIX sockets in this process, acting while the
// pipeworks loop is pumped.
#include "pipe_support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * 1024;

std::chrono::milliseconds ms_since(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t);
}

// Runs `step` (which may act on raw sockets), then the loop for a millisecond, until step()
// returns true; fails the test (with `what`) if the deadline passes first. Unlike run_until,
// the loop never blocks waiting for an event that only the raw peer's next action would cause.
bool pump_until(Loop& loop, const std::function<bool()>& step, const char* what,
                std::chrono::milliseconds deadline = kDeadline) {
    const auto end = Clock::now() + deadline;
    for (;;) {
        if (step()) return true;
        if (Clock::now() >= end) {
            FAIL_CHECK("timed out waiting for: " << std::string(what));
            return false;
        }
        run_for(loop, 1ms);
    }
}

int domain_of(Family f) {
    return f == Family::ipv6 ? AF_INET6 : AF_INET;
}

// A non-blocking raw TCP socket, not connected.
Fd raw_tcp_socket(Family f) {
    Fd s(::socket(domain_of(f), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    REQUIRE_MESSAGE(s.fd >= 0, "socket: " << std::strerror(errno));
    return s;
}

// Starts a non-blocking connect of `s` to `to`.
void start_connect(const Fd& s, const Address& to) {
    int rc = ::connect(s.fd, to.sockaddr(), to.sockaddr_len());
    REQUIRE_MESSAGE((rc == 0 || errno == EINPROGRESS), "connect: " << std::strerror(errno));
}

// A non-blocking raw TCP socket whose connect to `to` has started.
Fd raw_connect(const Address& to) {
    Fd s = raw_tcp_socket(to.family());
    start_connect(s, to);
    return s;
}

// Whether the connect of `fd` has completed successfully (at TCP level: the kernel finished the
// handshake, whether or not the server accepted).
bool connected(int fd) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT)) return false;
    int err = 0;
    socklen_t len = sizeof err;
    return ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

std::uint16_t local_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).port();
}

// The server's open accepted pipe whose peer is the raw socket `fd` (null if none).
PipePtr accepted_for(const Pipe& server, int fd) {
    const std::uint16_t port = local_port(fd);
    for (auto& c : server.clients())
        if (c->peer_address().port() == port) return c;
    return nullptr;
}

// How a raw socket's reading side stands.
enum class Peer { open, eof, reset, error };

const char* to_string(Peer p) {
    switch (p) {
        case Peer::open:
            return "open";
        case Peer::eof:
            return "eof";
        case Peer::reset:
            return "reset";
        case Peer::error:
            return "error";
    }
    return "?";
}

// What a raw socket has read, checked against what it should receive, in order.
struct RawReader {
    std::size_t got = 0;
    bool mismatch = false;
    std::size_t mismatch_at = 0;
    Peer state = Peer::open;
    int error = 0;  // errno of Peer::error

    // Reads what is there, without waiting, comparing it with expected[got...]. Returns true
    // once the socket's reading side has ended (EOF, reset or another error).
    bool read_some(int fd, std::string_view expected) {
        char buf[256 * 1024];
        while (state == Peer::open) {
            ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                auto len = static_cast<std::size_t>(n);
                if (!mismatch &&
                    (got + len > expected.size() || std::memcmp(buf, expected.data() + got, len))) {
                    mismatch = true;
                    mismatch_at = got;
                }
                got += len;
            } else if (n == 0) {
                state = Peer::eof;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            } else if (errno == EINTR) {
                continue;
            } else if (errno == ECONNRESET) {
                state = Peer::reset;
            } else {
                state = Peer::error;
                error = errno;
            }
        }
        return state != Peer::open;
    }
};

// Whether a raw socket's reading side has ended, reading (and counting) whatever arrives first.
Peer peer_state(int fd, std::size_t* unexpected_bytes = nullptr) {
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            if (unexpected_bytes) *unexpected_bytes += static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) return Peer::eof;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Peer::open;
        return errno == ECONNRESET ? Peer::reset : Peer::error;
    }
}

// A server whose accepted pipes echo every message back.
PipePtr echo_server(Loop& loop, Family f, const NetConf& conf = {}) {
    auto s = must(Pipe::listen(loop, lo(f), conf), "listen");
    s->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });
    return s;
}

// What a server and the pipes it accepted went through. The end and error callbacks are set on
// the server, so every accepted pipe carries a copy of the end callback.
struct ClientEnd {
    Pipe* pipe = nullptr;
    EndInfo info;
    Clock::time_point at;
};

struct ServerWatch {
    std::vector<PipePtr> accepted;
    std::vector<ClientEnd> ends;  // of accepted pipes only
    std::vector<Error> errors;    // the server's on_error reports

    void attach(Pipe& server) {
        server.on_accept([this](Pipe&, const PipePtr& p) { accepted.push_back(p); });
        server.on_end([this](Pipe& p, const EndInfo& info) {
            if (p.kind() == PipeKind::tcp_accepted) ends.push_back({&p, info, Clock::now()});
        });
        server.on_error([this](Pipe&, const Error& e) { errors.push_back(e); });
    }
    const ClientEnd* end_of(const Pipe* p) const {
        for (auto& e : ends)
            if (e.pipe == p) return &e;
        return nullptr;
    }
};

// RLIMIT_NOFILE, put back as it was when this goes out of scope.
struct NofileLimit {
    rlimit saved{};
    bool changed = false;

    NofileLimit() { REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0); }
    ~NofileLimit() { restore(); }
    NofileLimit(const NofileLimit&) = delete;
    NofileLimit& operator=(const NofileLimit&) = delete;

    bool set_soft(rlim_t soft) {
        rlimit r = saved;
        r.rlim_cur = soft;
        changed = true;
        return ::setrlimit(RLIMIT_NOFILE, &r) == 0;
    }
    void restore() {
        if (changed) ::setrlimit(RLIMIT_NOFILE, &saved);
        changed = false;
    }
};

// The open file descriptors of this process: how many, and the highest.
struct FdUse {
    int count = 0;
    int highest = -1;
};

FdUse fds_in_use() {
    FdUse u;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    const int own = ::dirfd(d);
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        int fd = std::atoi(e->d_name);
        if (fd == own) continue;
        ++u.count;
        u.highest = std::max(u.highest, fd);
    }
    ::closedir(d);
    return u;
}

// A raw client sends `total` bytes of payload to an echo server as fast as the kernel takes
// them, never reading, until all went or the kernel refused more for `stuck_for`. The loop runs
// in between; `sample` runs after each loop step. Returns how many bytes were sent.
std::size_t flood(Loop& loop, int fd, std::string_view data, std::chrono::milliseconds stuck_for,
                  const std::function<bool()>& sample) {
    std::size_t sent = 0;
    auto last_progress = Clock::now();
    const auto give_up = Clock::now() + 20s;
    while (sent < data.size() && Clock::now() - last_progress < stuck_for &&
           Clock::now() < give_up) {
        for (int i = 0; i < 16 && sent < data.size(); ++i) {
            std::size_t n = std::min<std::size_t>(256 * KiB, data.size() - sent);
            ssize_t w = ::send(fd, data.data() + sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent += static_cast<std::size_t>(w);
                last_progress = Clock::now();
                continue;
            }
            REQUIRE_MESSAGE((errno == EAGAIN || errno == EWOULDBLOCK),
                            "send: " << std::strerror(errno));
            break;
        }
        run_for(loop, 1ms);
        if (sample()) break;
    }
    return sent;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Read backpressure

TEST_CASE(
    "Limits: read backpressure (on by default) bounds an echo server against a peer that "
    "never reads") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        REQUIRE(conf.read_backpressure);  // the default
        auto server = echo_server(loop, f, conf);
        ServerWatch w;
        w.attach(*server);
        // Registered after the echo, so it sees each reply's queue just after it was added.
        std::size_t peak_in_callback = 0;
        server->on_message([&](Pipe& p, const Message&) {
            peak_in_callback = std::max(peak_in_callback, p.write_queue_bytes());
        });

        Fd c = raw_connect(server->local_address());
        pump_until(
            loop, [&] { return connected(c.fd) && server->clients().size() == 1; },
            "raw client accepted");
        REQUIRE(server->clients().size() == 1);
        PipePtr acc = server->clients().front();

        const std::string data = payload(60 * MiB, 7);
        std::size_t peak = 0;
        const std::size_t sent = flood(loop, c.fd, data, 1000ms, [&] {
            for (auto& p : server->clients()) peak = std::max(peak, p->write_queue_bytes());
            return false;
        });
        const std::size_t bound = conf.high_watermark + conf.reader_limit + 64 * KiB;
        MESSAGE(family_name(f) << ": sent " << sent << " bytes before the kernel refused more; "
                               << "server queue peak " << peak << " (sampled), " << peak_in_callback
                               << " (after each echo); bound " << bound);
        // The kernel refused more long before 60 MiB: the server stopped reading.
        CHECK(sent < data.size());
        CHECK(sent > conf.high_watermark);
        // The queue reached the watermark (that is what stopped the reading) and no further.
        CHECK(peak_in_callback > conf.high_watermark);
        CHECK(peak < bound);
        CHECK(peak_in_callback < bound);
        CHECK(acc->is_up());
        CHECK(w.ends.empty());

        // The client reads at last: every byte it sent comes back, in order.
        RawReader r;
        pump_until(
            loop,
            [&] {
                r.read_some(c.fd, std::string_view(data).substr(0, sent));
                return r.got >= sent || r.state != Peer::open;
            },
            "every byte echoed back", 20s);
        CHECK(r.got == sent);
        CHECK_MESSAGE(!r.mismatch, "echo differs from what was sent at byte " << r.mismatch_at);
        CHECK(r.state == Peer::open);
        CHECK(acc->is_up());
        CHECK(acc->stats().bytes_in == sent);
        CHECK(acc->stats().bytes_out == sent);
        CHECK(acc->write_queue_bytes() == 0);
        CHECK(peak_in_callback < bound);  // also while the queue drained
        CHECK(w.ends.empty());
    }
}

TEST_CASE("Limits: with read_backpressure off an echo server's queue grows past 8 MiB") {
    // What the switch does: without it, a peer that sends without reading makes the server
    // queue replies until max_write_queue.
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.read_backpressure = false;
        auto server = echo_server(loop, f, conf);
        ServerWatch w;
        w.attach(*server);
        Fd c = raw_connect(server->local_address());
        pump_until(
            loop, [&] { return connected(c.fd) && server->clients().size() == 1; },
            "raw client accepted");
        REQUIRE(server->clients().size() == 1);
        PipePtr acc = server->clients().front();

        const std::string data = payload(60 * MiB, 8);
        std::size_t peak = 0;
        const std::size_t sent = flood(loop, c.fd, data, 1000ms, [&] {
            for (auto& p : server->clients()) peak = std::max(peak, p->write_queue_bytes());
            return peak > 8 * MiB;
        });
        MESSAGE(family_name(f) << ": sent " << sent << " bytes, server queue peak " << peak);
        CHECK(peak > 8 * MiB);
        CHECK(acc->is_up());

        // Nothing was lost either: the client reads it all back.
        RawReader r;
        pump_until(
            loop,
            [&] {
                r.read_some(c.fd, std::string_view(data).substr(0, sent));
                return r.got >= sent || r.state != Peer::open;
            },
            "every byte echoed back", 20s);
        CHECK(r.got == sent);
        CHECK_MESSAGE(!r.mismatch, "echo differs from what was sent at byte " << r.mismatch_at);
        CHECK(w.ends.empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 2. idle_timeout

TEST_CASE(
    "Limits: idle_timeout ends an accepted pipe that sees no byte, and spares an active one") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.idle_timeout = 300ms;
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        ServerWatch w;
        w.attach(*server);

        // Both clients at once: one silent, one sending a byte every 100 ms.
        const auto t0 = Clock::now();
        Fd silent = raw_connect(server->local_address());
        Fd active = raw_connect(server->local_address());
        PipePtr silent_acc, active_acc;
        pump_until(
            loop,
            [&] {
                if (!silent_acc) silent_acc = accepted_for(*server, silent.fd);
                if (!active_acc) active_acc = accepted_for(*server, active.fd);
                return silent_acc && active_acc;
            },
            "both clients accepted");
        REQUIRE(silent_acc);
        REQUIRE(active_acc);

        int bytes_sent = 0;
        auto next_byte = Clock::now();
        bool active_ended_early = false;
        Peer silent_seen = Peer::open;
        while (Clock::now() - t0 < 1000ms) {
            if (Clock::now() >= next_byte) {
                REQUIRE(::send(active.fd, "a", 1, MSG_NOSIGNAL) == 1);
                ++bytes_sent;
                next_byte += 100ms;
            }
            run_for(loop, 5ms);
            if (silent_seen == Peer::open) silent_seen = peer_state(silent.fd);
            if (!active_acc->is_up() || w.end_of(active_acc.get())) active_ended_early = true;
        }

        // The silent one timed out.
        const ClientEnd* e = w.end_of(silent_acc.get());
        REQUIRE(e != nullptr);
        const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(e->at - t0);
        MESSAGE(family_name(f) << ": silent client's pipe ended " << after.count()
                               << " ms after the connect: " << e->info.error.message);
        CHECK(e->info.reason == EndReason::timeout);
        CHECK(e->info.error == errc::idle_timeout);
        CHECK(mentions(e->info.error, "NetConf.idle_timeout"));
        CHECK(after >= 295ms);
        CHECK(after <= 1500ms);
        CHECK(e->info.unsent_bytes == 0);
        // It ended in order: the raw client reads a clean end.
        CHECK(to_string(silent_seen) == std::string("eof"));

        // The active one stayed up the whole second, and still is.
        CHECK_FALSE(active_ended_early);
        CHECK(active_acc->is_up());
        CHECK(w.end_of(active_acc.get()) == nullptr);
        CHECK(bytes_sent >= 9);
        pump_until(
            loop,
            [&] { return active_acc->stats().bytes_in == static_cast<std::uint64_t>(bytes_sent); },
            "the active client's bytes arrived");
        CHECK(peer_state(active.fd) == Peer::open);
        CHECK(w.ends.size() == 1);

        // Once it goes quiet, it times out too.
        const auto quiet = Clock::now();
        pump_until(
            loop, [&] { return w.end_of(active_acc.get()) != nullptr; },
            "the active client, now quiet, times out", 3000ms);
        if (const ClientEnd* a = w.end_of(active_acc.get())) {
            CHECK(a->info.error == errc::idle_timeout);
            CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(a->at - quiet) <= 1500ms);
        }
        CHECK(server->is_up());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. frame_timeout

TEST_CASE("Limits: frame_timeout closes 2,000 stalled half-headers while a good client is served") {
    constexpr std::size_t kBad = 2000;
    constexpr std::size_t kBatch = 100;
    NofileLimit limit;
    // Each bad connection costs two descriptors here: the raw socket and the accepted pipe.
    const rlim_t need = 2 * kBad + 256;
    if (limit.saved.rlim_cur < need) {
        if (limit.saved.rlim_max != RLIM_INFINITY && limit.saved.rlim_max < need) {
            MESSAGE("skipped: RLIMIT_NOFILE hard limit " << limit.saved.rlim_max << " is below "
                                                         << need);
            CHECK(limit.saved.rlim_max < need);
            return;
        }
        REQUIRE(
            limit.set_soft(limit.saved.rlim_max == RLIM_INFINITY ? need : limit.saved.rlim_max));
    }

    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        conf.frame_timeout = 500ms;
        auto server = echo_server(loop, f, conf);
        std::size_t ends = 0, frame_ends = 0, partial_2 = 0;
        std::vector<std::string> other_ends;
        server->on_end([&](Pipe& p, const EndInfo& info) {
            if (p.kind() != PipeKind::tcp_accepted) return;
            ++ends;
            if (info.reason == EndReason::timeout && info.error == errc::frame_timeout)
                ++frame_ends;
            else if (other_ends.size() < 5)
                other_ends.push_back(std::string(to_string(info.reason)) + ": " +
                                     info.error.message);
            if (info.partial_frame_bytes == 2) ++partial_2;
        });

        // The good client: a complete frame every 50 ms, each echo timed.
        NetConf cconf;
        cconf.framer = Framer::message();
        auto good = must(Pipe::connect(loop, server->local_address(), cconf), "connect");
        auto good_end = watch_end(*good);
        std::vector<Clock::time_point> good_sent_at;
        std::size_t echoes = 0, bad_echoes = 0;
        std::chrono::milliseconds worst_echo{0};
        good->on_message([&](Pipe&, const Message& m) {
            if (echoes < good_sent_at.size()) {
                worst_echo = std::max(worst_echo, ms_since(good_sent_at[echoes]));
                if (m.data != "ping " + std::to_string(echoes)) ++bad_echoes;
            } else {
                ++bad_echoes;
            }
            ++echoes;
        });
        run_until(
            loop, [&] { return good->is_up() && server->clients().size() == 1; }, "good client up");
        bool ticking = true;
        Timer tick_timer;
        std::function<void()> tick = [&] {
            if (!ticking) return;
            auto e = good->send("ping " + std::to_string(good_sent_at.size()));
            if (!e) good_sent_at.push_back(Clock::now());
            tick_timer = loop.call_later(50ms, tick);
        };
        tick();

        // The bad connections, in batches, the loop pumped throughout.
        std::vector<Fd> bad;
        bad.reserve(kBad);
        std::vector<Clock::time_point> sent_at(kBad), closed_at(kBad);
        std::vector<Peer> seen(kBad, Peer::open);
        std::size_t closed = 0, eofs = 0, resets = 0, errors = 0, unexpected = 0;
        std::vector<pollfd> pfds;
        std::vector<std::size_t> idx;
        auto check_closed = [&] {
            pfds.clear();
            idx.clear();
            for (std::size_t i = 0; i < bad.size(); ++i) {
                if (seen[i] != Peer::open) continue;
                pfds.push_back({bad[i].fd, POLLIN, 0});
                idx.push_back(i);
            }
            if (pfds.empty()) return;
            if (::poll(pfds.data(), pfds.size(), 0) <= 0) return;
            for (std::size_t k = 0; k < pfds.size(); ++k) {
                if (!pfds[k].revents) continue;
                std::size_t i = idx[k];
                Peer p = peer_state(bad[i].fd, &unexpected);
                if (p == Peer::open) continue;
                seen[i] = p;
                closed_at[i] = Clock::now();
                ++closed;
                if (p == Peer::eof) ++eofs;
                if (p == Peer::reset) ++resets;
                if (p == Peer::error) ++errors;
            }
        };
        const auto t_start = Clock::now();
        for (std::size_t b = 0; b < kBad; b += kBatch) {
            const std::size_t first = bad.size();
            for (std::size_t i = 0; i < kBatch; ++i)
                bad.push_back(raw_connect(server->local_address()));
            pump_until(
                loop,
                [&] {
                    check_closed();
                    for (std::size_t i = first; i < bad.size(); ++i)
                        if (!connected(bad[i].fd)) return false;
                    return true;
                },
                "a batch of raw connections connected");
            for (std::size_t i = first; i < bad.size(); ++i) {
                // 2 bytes of a 4-byte length header, then nothing.
                REQUIRE(::send(bad[i].fd, "\0\0", 2, MSG_NOSIGNAL) == 2);
                sent_at[i] = Clock::now();
            }
            run_for(loop, 1ms);
            check_closed();
        }
        const auto connect_phase = ms_since(t_start);

        pump_until(
            loop,
            [&] {
                check_closed();
                return closed == kBad && frame_ends == kBad;
            },
            "every stalled connection closed by the server", 10s);
        const auto all_closed = ms_since(t_start);
        // A little more of the good client, then wait for its last echoes.
        run_for(loop, 200ms);
        ticking = false;
        tick_timer.cancel();
        pump_until(
            loop, [&] { return echoes >= good_sent_at.size(); }, "the good client's last echoes");

        std::chrono::milliseconds shortest{1'000'000}, longest{0};
        for (std::size_t i = 0; i < bad.size(); ++i) {
            if (seen[i] == Peer::open) continue;
            auto d =
                std::chrono::duration_cast<std::chrono::milliseconds>(closed_at[i] - sent_at[i]);
            shortest = std::min(shortest, d);
            longest = std::max(longest, d);
        }
        MESSAGE(family_name(f) << ": " << kBad << " connections made in " << connect_phase.count()
                               << " ms, all closed after " << all_closed.count() << " ms; "
                               << "each closed " << shortest.count() << ".." << longest.count()
                               << " ms after its 2 bytes (" << eofs << " EOF, " << resets
                               << " reset); good client: " << good_sent_at.size()
                               << " messages, worst echo " << worst_echo.count() << " ms");
        for (auto& s : other_ends) MESSAGE("accepted pipe ended otherwise: " << s);

        CHECK(bad.size() == kBad);
        CHECK(closed == kBad);
        CHECK(eofs + resets == kBad);
        CHECK(errors == 0);
        CHECK(unexpected == 0);
        CHECK(shortest >= 450ms);
        CHECK(longest <= 3000ms);
        CHECK(ends == kBad);
        CHECK(frame_ends == kBad);
        CHECK(partial_2 == kBad);
        CHECK(other_ends.empty());

        // The good client was never disconnected and got every echo, in order, promptly.
        CHECK(good_end->count == 0);
        CHECK(good->is_up());
        CHECK(good_sent_at.size() >= 10);
        CHECK(echoes == good_sent_at.size());
        CHECK(bad_echoes == 0);
        CHECK(worst_echo < 1000ms);
        REQUIRE(server->clients().size() == 1);
        CHECK(server->clients().front()->peer_address().port() == good->local_address().port());
        CHECK(server->is_up());
    }
}

// ---------------------------------------------------------------------------------------------
// 4. max_clients

TEST_CASE("Limits: max_clients leaves connections in the backlog until an accepted pipe ends") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_clients = 3;
        auto server = echo_server(loop, f, conf);
        ServerWatch w;
        w.attach(*server);

        std::vector<Fd> raw;
        for (int i = 0; i < 5; ++i) raw.push_back(raw_connect(server->local_address()));
        // Every connect succeeds at TCP level: the kernel completes the handshake.
        pump_until(
            loop,
            [&] {
                for (auto& r : raw)
                    if (!connected(r.fd)) return false;
                return server->clients().size() >= 3;
            },
            "5 connects done, 3 accepted");
        run_for(loop, 200ms);
        CHECK(server->clients().size() == 3);
        CHECK(w.accepted.size() == 3);
        CHECK(w.ends.empty());
        for (auto& r : raw) CHECK(connected(r.fd));

        // Which raw sockets were taken, which wait.
        auto served = [&](const Fd& r) { return accepted_for(*server, r.fd) != nullptr; };
        std::vector<std::size_t> in, waiting;
        for (std::size_t i = 0; i < raw.size(); ++i) (served(raw[i]) ? in : waiting).push_back(i);
        REQUIRE(in.size() == 3);
        REQUIRE(waiting.size() == 2);

        // A served one answers.
        auto echo_check = [&](const Fd& r, std::string_view what) {
            REQUIRE(::send(r.fd, what.data(), what.size(), MSG_NOSIGNAL) ==
                    static_cast<ssize_t>(what.size()));
            RawReader rr;
            pump_until(
                loop,
                [&] {
                    rr.read_some(r.fd, what);
                    return rr.got >= what.size() || rr.state != Peer::open;
                },
                "echo");
            CHECK(rr.got == what.size());
            CHECK_FALSE(rr.mismatch);
            CHECK(rr.state == Peer::open);
        };
        echo_check(raw[in[0]], "1");

        for (int round = 0; round < 2; ++round) {
            CAPTURE(round);
            // One served client leaves: one waiting connection takes its place.
            PipePtr leaving = accepted_for(*server, raw[in[round]].fd);
            REQUIRE(leaving);
            raw[in[round]] = Fd();
            const std::size_t accepted_before = w.accepted.size();
            pump_until(
                loop,
                [&] {
                    return w.accepted.size() == accepted_before + 1 &&
                           w.end_of(leaving.get()) != nullptr;
                },
                "the next waiting connection accepted");
            run_for(loop, 100ms);
            CHECK(server->clients().size() == 3);
            CHECK(w.accepted.size() == accepted_before + 1);
            if (const ClientEnd* e = w.end_of(leaving.get()))
                CHECK(e->info.reason == EndReason::peer_close);
            // The newcomer is served.
            std::size_t newcomer = raw.size();
            for (std::size_t i : waiting)
                if (raw[i].fd >= 0 && served(raw[i])) newcomer = i;
            REQUIRE(newcomer < raw.size());
            CHECK(accepted_for(*server, raw[newcomer].fd) == w.accepted.back());
            echo_check(raw[newcomer], "x");
            waiting.erase(std::find(waiting.begin(), waiting.end(), newcomer));
        }
        // No accepted pipe was ever closed by the limit: only the two that left ended.
        CHECK(w.accepted.size() == 5);
        CHECK(w.ends.size() == 2);
        CHECK(server->clients().size() == 3);
        for (auto& p : server->clients()) CHECK(p->is_up());
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Accept failure

TEST_CASE("Limits: a server out of file descriptors reports accept_failed once and keeps serving") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, f);
        ServerWatch w;
        w.attach(*server);

        // The clients' sockets exist before the limit drops, so connecting them needs no
        // descriptor; the server then has room for one or two more.
        std::vector<Fd> raw;
        for (int i = 0; i < 8; ++i) raw.push_back(raw_tcp_socket(f));
        {
            // Placeholders take every free descriptor number below the highest in use, so
            // "highest + 2" leaves room for exactly one more.
            std::vector<Fd> placeholders;
            const int highest = fds_in_use().highest;
            for (;;) {
                int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
                REQUIRE(fd >= 0);
                if (fd > highest) {
                    ::close(fd);
                    break;
                }
                placeholders.emplace_back(fd);
            }
            NofileLimit limit;
            const FdUse use = fds_in_use();
            const int soft = use.highest + 2;
            const int room = soft - use.count;
            REQUIRE(room >= 1);
            REQUIRE(room <= 2);
            REQUIRE(limit.set_soft(static_cast<rlim_t>(soft)));
            for (auto& r : raw) start_connect(r, server->local_address());
            pump_until(
                loop, [&] { return !w.errors.empty(); }, "accept_failed reported", 2000ms);
            run_for(loop, 300ms);
            limit.restore();
            // What the clients saw: served, or closed by libuv's EMFILE trick, or waiting.
            int served = 0, eof = 0, reset = 0, waiting = 0;
            for (auto& r : raw) {
                if (accepted_for(*server, r.fd)) {
                    ++served;
                    continue;
                }
                switch (peer_state(r.fd)) {
                    case Peer::eof:
                        ++eof;
                        break;
                    case Peer::reset:
                        ++reset;
                        break;
                    default:
                        ++waiting;
                }
            }
            MESSAGE(family_name(f)
                    << ": soft limit " << soft << " (room for " << room
                    << " descriptors): " << w.accepted.size() << " accepted, " << w.errors.size()
                    << " error reports; raw clients: " << served << " served, " << eof << " EOF, "
                    << reset << " reset, " << waiting << " still waiting");
            CHECK(w.errors.size() == 1);
            if (!w.errors.empty()) {
                const Error& e = w.errors.front();
                CAPTURE(e.message);
                CHECK(e == errc::accept_failed);
                CHECK((mentions(e, "EMFILE") || mentions(e, "Too many open files")));
            }
            CHECK(w.accepted.size() <= static_cast<std::size_t>(std::max(room, 0)));
            CHECK(w.accepted.size() < raw.size());
            CHECK(server->is_up());
        }
        raw.clear();

        // With descriptors back, a new client is served.
        auto c = must(Pipe::connect(loop, server->local_address()), "connect");
        auto got = collect(*c);
        REQUIRE_FALSE(c->send("still serving"));
        run_until(
            loop, [&] { return got->data == "still serving"; }, "echo after the limit");
        CHECK(got->data == "still serving");
        CHECK(server->is_up());
        CHECK(w.errors.size() <= 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. close_timeout

TEST_CASE("Limits: close_timeout resets a connection whose peer does not read") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.close_timeout = 300ms;
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        ServerWatch w;
        w.attach(*server);
        Fd c = raw_connect(server->local_address());
        pump_until(
            loop, [&] { return connected(c.fd) && w.accepted.size() == 1; }, "raw client accepted");
        REQUIRE(w.accepted.size() == 1);
        PipePtr acc = w.accepted.front();

        const std::string data = payload(32 * MiB, 61);
        for (std::size_t off = 0; off < data.size(); off += 64 * KiB) {
            auto e = acc->send(std::string_view(data).substr(off, 64 * KiB));
            REQUIRE_MESSAGE(!e, e.message);
        }
        run_for(loop, 50ms);
        REQUIRE(acc->write_queue_bytes() > 0);
        const auto t_close = Clock::now();
        acc->close();
        pump_until(
            loop, [&] { return w.end_of(acc.get()) != nullptr; }, "the closing pipe ends", 3000ms);
        const ClientEnd* e = w.end_of(acc.get());
        REQUIRE(e != nullptr);
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(e->at - t_close);
        MESSAGE(family_name(f) << ": ended " << took.count() << " ms after close(), "
                               << e->info.unsent_bytes
                               << " bytes unsent: " << e->info.error.message);
        CHECK(e->info.reason == EndReason::timeout);
        CHECK(e->info.error == errc::close_timeout);
        CHECK(mentions(e->info.error, "NetConf.close_timeout"));
        CHECK(e->info.unsent_bytes > 0);
        CHECK(e->info.unsent_bytes < data.size());
        CHECK(took >= 280ms);
        CHECK(took < 2000ms);

        // The peer drains what arrived, then sees a reset, never a clean end.
        RawReader r;
        pump_until(
            loop, [&] { return r.read_some(c.fd, data); }, "the raw client sees the end");
        MESSAGE(family_name(f) << ": raw client read " << r.got << " bytes, then "
                               << std::string(to_string(r.state)));
        CHECK(to_string(r.state) == std::string("reset"));
        CHECK(r.got < data.size());
        CHECK_FALSE(r.mismatch);
    }
}

TEST_CASE("Limits: close() delivers everything to a reading peer within close_timeout") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.close_timeout = 300ms;
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        ServerWatch w;
        w.attach(*server);
        Fd c = raw_connect(server->local_address());
        pump_until(
            loop, [&] { return connected(c.fd) && w.accepted.size() == 1; }, "raw client accepted");
        REQUIRE(w.accepted.size() == 1);
        PipePtr acc = w.accepted.front();

        const std::string data = payload(4 * MiB, 62);
        for (std::size_t off = 0; off < data.size(); off += 64 * KiB) {
            auto e = acc->send(std::string_view(data).substr(off, 64 * KiB));
            REQUIRE_MESSAGE(!e, e.message);
        }
        acc->close();
        RawReader r;
        pump_until(
            loop, [&] { return r.read_some(c.fd, data) && w.end_of(acc.get()) != nullptr; },
            "everything read and the pipe ended");
        CHECK(to_string(r.state) == std::string("eof"));
        CHECK(r.got == data.size());
        CHECK_FALSE(r.mismatch);
        const ClientEnd* e = w.end_of(acc.get());
        REQUIRE(e != nullptr);
        CAPTURE(e->info.error.message);
        CHECK(e->info.reason == EndReason::local_close);
        CHECK_FALSE(e->info.error);
        CHECK(e->info.unsent_bytes == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. UDP queue bound in bytes

TEST_CASE("Limits: a UDP queue bounded by max_queue_bytes counts each entry's overhead") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_queue_bytes = 100 * queue_entry_overhead;
        auto udp = must(Pipe::udp(loop, lo(f), {}, conf), "udp");
        const Address to = udp->local_address();
        Fd s(::socket(domain_of(f), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        REQUIRE(s.fd >= 0);

        // In small batches, so the kernel's receive buffer never drops one: every drop is the
        // queue's.
        std::size_t sent = 0, worst_queued = 0;
        while (sent < 1000) {
            for (int i = 0; i < 20; ++i) {
                REQUIRE(::sendto(s.fd, "", 0, 0, to.sockaddr(), to.sockaddr_len()) == 0);
                ++sent;
            }
            if (!pump_until(
                    loop, [&] { return udp->stats().msgs_in >= sent; },
                    "a batch of empty datagrams received"))
                break;
            worst_queued = std::max(worst_queued, udp->queued());
        }
        const PipeStats st = udp->stats();
        MESSAGE(family_name(f) << ": " << st.msgs_in << " received, " << udp->queued()
                               << " queued (at most " << worst_queued << "), " << st.dropped
                               << " dropped");
        CHECK(st.msgs_in == 1000);
        CHECK(worst_queued <= 100);
        CHECK(udp->queued() <= 100);
        CHECK(udp->queued() == 100);
        CHECK(st.dropped >= 900);
        // What stays is the newest: empty messages from the raw socket.
        auto m = udp->try_recv();
        REQUIRE(m);
        CHECK(m->data.empty());
        CHECK(m->from.port() == local_port(s.fd));
    }
}
