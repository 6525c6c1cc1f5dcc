// pipeworks-relay: the RelayServer in-process (byte-exact bulk relay, many connections,
// half-close, resets, bounded memory, UDP per source, TCP <-> UDP, unreachable targets, limits,
// shutdown, TLS terminated and originated, targets by name through a dnsmasq on loopback), and
// the built binary as a subprocess (arguments, --help, first line, signals, TLS with
// certificate files, --dns).
#include "../tools/relay/relay_server.hpp"
#include "child_process.hpp"
#include "dns_support.hpp"
#include "support.hpp"
#include "tls_support.hpp"

#include <pipeworks/version.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pipeworks::relay;
using namespace pw_test;

namespace {

Endpoint endpoint(Scheme s, const Address& a) {
    return Endpoint{s, a, std::string(to_string(s)) + "://" + a.to_string(), {}};
}

RelayConfig config(Scheme listen, Scheme target, const Address& target_addr,
                   Family f = Family::ipv4) {
    RelayConfig c;
    c.listen = endpoint(listen, lo(f));
    c.target = endpoint(target, target_addr);
    if (is_stream(listen) != is_stream(target)) c.framing = Framing::length;
    return c;
}

NetConf framed(const Framer& f) {
    NetConf c;
    c.framer = f;
    return c;
}

// A started relay with every close report collected.
struct TestRelay {
    std::shared_ptr<RelayServer> server;
    std::vector<ConnReport> reports;
    std::vector<std::string> logs;
    TestRelay(Loop& loop, RelayConfig c) {
        server = must(RelayServer::start(loop, std::move(c)), "relay start");
        server->on_close([this](const ConnReport& r) { reports.push_back(r); });
        server->on_log([this](const std::string& l) { logs.push_back(l); });
    }
    Address addr() const { return server->local_address(); }
};

// A TCP server that echoes what it receives.
PipePtr echo_server(Loop& loop, Family f, const NetConf& conf = {}) {
    auto s = must(Pipe::listen(loop, lo(f), conf), "echo listen");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    return s;
}

// A UDP socket that sends every datagram back to its source.
PipePtr udp_echo(Loop& loop, Family f) {
    auto s = must(Pipe::udp(loop, lo(f)), "udp echo");
    s->on_message([](Pipe& p, const Message& m) { CHECK(!p.send_to(m.data, m.from)); });
    return s;
}

// A port nothing listens on: bound once, then closed.
Address closed_port(Family f) {
    const int fd = ::socket(f == Family::ipv4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    Address a = lo(f);
    REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0);
    ::close(fd);
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

// Deterministic bytes (xorshift64*), generated a chunk at a time.
struct ByteSource {
    std::uint64_t state = 0x9e3779b97f4a7c15ull;
    void fill(std::string& out, std::size_t n) {
        out.resize(n);
        for (std::size_t i = 0; i < n; i += 8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            const std::uint64_t v = state * 0x2545f4914f6cdd1dull;
            std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, n - i));
        }
    }
};

// A 64-bit hash of a byte stream that does not depend on how the stream is cut into pieces.
struct StreamHash {
    std::uint64_t h = 0xcbf29ce484222325ull;
    std::uint64_t total = 0;
    unsigned char carry[8]{};
    std::size_t carried = 0;
    void word(std::uint64_t w) {
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    void add(std::string_view d) {
        total += d.size();
        std::size_t i = 0;
        while (carried > 0 && carried < 8 && i < d.size()) carry[carried++] = d[i++];
        if (carried == 8) {
            std::uint64_t w;
            std::memcpy(&w, carry, 8);
            word(w);
            carried = 0;
        }
        for (; i + 8 <= d.size(); i += 8) {
            std::uint64_t w;
            std::memcpy(&w, d.data() + i, 8);
            word(w);
        }
        while (i < d.size()) carry[carried++] = d[i++];
    }
    std::uint64_t digest() const {
        std::uint64_t w = 0;
        std::memcpy(&w, carry, carried);
        StreamHash c = *this;
        c.word(w ^ (total << 3));
        return c.h;
    }
};

// A TCP server that hashes what its clients send and keeps the end of the last one.
struct BulkSink {
    PipePtr server;
    StreamHash received;
    std::optional<EndInfo> end;
    explicit BulkSink(Loop& loop) : server(must(Pipe::listen(loop, lo(Family::ipv4)))) {
        server->on_message([this](Pipe&, const Message& m) { received.add(m.data); });
        server->on_accept([this](Pipe&, const PipePtr& c) {
            c->on_end([this](Pipe&, const EndInfo& e) { end = e; });
        });
    }
    BulkSink(const BulkSink&) = delete;
    BulkSink& operator=(const BulkSink&) = delete;
};

// Sends `total` bytes of ByteSource down `client`, keeping its queue above its high watermark
// until everything is sent, then closes it: the far end sees the end after the last byte.
struct BulkSender {
    PipePtr client;
    std::size_t total;
    ByteSource source;
    StreamHash sent;
    std::string chunk;
    std::size_t produced = 0;
    bool shut = false;
    BulkSender(PipePtr c, std::size_t n) : client(std::move(c)), total(n) {
        client->on_drain([this](Pipe&) { pump(); });
        pump();
    }
    BulkSender(const BulkSender&) = delete;
    BulkSender& operator=(const BulkSender&) = delete;
    void pump() {
        while (produced < total && client->writable()) {
            source.fill(chunk, std::min<std::size_t>(256 * 1024, total - produced));
            sent.add(chunk);
            REQUIRE(!client->send(chunk));
            produced += chunk.size();
        }
        if (produced == total && !shut) {
            shut = true;
            client->close();
        }
    }
};

// The TLS tests' certificates, as PEM text and as files (the binary reads files) in a
// directory of their own, removed at exit: a CA, a certificate for localhost, 127.0.0.1 and
// ::1 signed by it, and one for the same names signed by a CA nobody trusts.
struct RelayPki {
    std::string ca_pem, cert_pem, key_pem, untrusted_pem;
    std::filesystem::path dir;
    std::string ca_file, cert_file, key_file;
    RelayPki() {
        Key ca_key = ec_key();
        Cert ca = make_cert(ca_key.get(), "pipeworks relay test CA", nullptr, nullptr, 1, true);
        Key key = ec_key();
        ca_pem = pem_of(ca.get());
        key_pem = pem_of(key.get());
        cert_pem =
            pem_of(make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 2, false).get());
        Key other_key = ec_key();
        Cert other = make_cert(other_key.get(), "untrusted CA", nullptr, nullptr, 3, true);
        untrusted_pem =
            pem_of(make_cert(key.get(), "localhost", other.get(), other_key.get(), 4, false).get());
        std::string tmpl = (std::filesystem::temp_directory_path() / "pipeworks-relay-XXXXXX");
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        ca_file = write("ca.pem", ca_pem);
        cert_file = write("cert.pem", cert_pem);
        key_file = write("key.pem", key_pem);
    }
    ~RelayPki() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    std::string write(const char* name, const std::string& text) const {
        const std::string path = dir / name;
        std::ofstream(path, std::ios::binary) << text;
        return path;
    }
};

const RelayPki& pki() {
    static const RelayPki p;
    return p;
}

// A TLS server's settings with the test certificate (or `cert`, with the same key).
NetConf tls_server(const std::string& cert = pki().cert_pem) {
    return tls_server_conf(cert, pki().key_pem);
}

// A TLS client's settings trusting the test CA.
NetConf tls_client() {
    return tls_client_conf(pki().ca_pem);
}

// A relay that terminates TLS on loopback with the test certificate, toward `target`.
RelayConfig terminating(Scheme target_scheme, const Address& target) {
    RelayConfig c = config(Scheme::tls, target_scheme, target);
    c.listen_tls.cert_pem = pki().cert_pem;
    c.listen_tls.key_pem = pki().key_pem;
    return c;
}

// Sends `msg` on a new connection to `to` and waits for the echo; the pipe stays open.
PipePtr echo_round_trip(Loop& loop, const Address& to, const NetConf& conf,
                        const std::string& msg) {
    auto p = must(Pipe::connect(loop, to, conf));
    auto got = std::make_shared<std::string>();
    p->on_message([got](Pipe&, const Message& m) { *got += m.data; });
    REQUIRE(!p->send(msg));
    run_until(
        loop, [&] { return got->size() >= msg.size() || p->ended(); }, "the echo");
    const bool echoed = *got == msg;
    CHECK_MESSAGE(echoed, got->size() << " of " << msg.size() << " bytes came back");
    return p;
}

// A client of `relay` whose target never comes up: it is reset without a byte back, and the
// relay reports the target's failure, `says` in its detail and its log line.
void expect_target_failure(Loop& loop, const TestRelay& relay, const char* says) {
    auto client = must(Pipe::connect(loop, relay.addr()));
    std::optional<EndInfo> end;
    std::string got;
    client->on_message([&](Pipe&, const Message& m) { got += m.data; });
    client->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    REQUIRE(!client->send("lost"));
    run_until(
        loop, [&] { return end && relay.reports.size() == 1; }, "the client ends");
    REQUIRE(end);
    CHECK(end->reason == EndReason::peer_reset);
    CHECK(got.empty());
    REQUIRE(relay.reports.size() == 1);
    const ConnReport& r = relay.reports[0];
    CAPTURE(r.detail);
    CHECK(r.side == "target");
    CHECK(r.reason == "error");
    CHECK(r.detail.find(says) != std::string::npos);
    CHECK(relay.server->counters().failed == 1);
    REQUIRE(relay.logs.size() == 1);
    CHECK(relay.logs[0].find(says) != std::string::npos);
}

std::size_t relay_test_mib() {
    if (const char* v = std::getenv("PIPEWORKS_RELAY_TEST_MIB")) {
        const long n = std::strtol(v, nullptr, 10);
        if (n > 0) return static_cast<std::size_t>(n);
    }
    return 256;
}

void raise_fd_limit(rlim_t want) {
    rlimit rl{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = std::min(want, rl.rlim_max);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);
}

std::size_t open_fd_limit() {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    return static_cast<std::size_t>(rl.rlim_cur);
}

}  // namespace

TEST_CASE("TCP to TCP: a bulk transfer arrives byte for byte (hash compared)") {
    const std::size_t total = relay_test_mib() * 1024 * 1024;
    MESSAGE("relaying " << total / (1024 * 1024) << " MiB (PIPEWORKS_RELAY_TEST_MIB)");
    Loop loop;
    BulkSink sink(loop);
    TestRelay relay(loop, config(Scheme::tcp, Scheme::tcp, sink.server->local_address()));
    BulkSender sender(must(Pipe::connect(loop, relay.addr())), total);
    const auto t0 = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return sink.end.has_value() && relay.reports.size() == 1; },
        "the whole transfer", 120s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("relayed in " << secs << " s: " << total / secs / (1 << 20) << " MiB/s");
    CHECK(sink.received.total == total);
    CHECK(sink.received.digest() == sender.sent.digest());
    CHECK(sink.end->reason == EndReason::peer_close);
    REQUIRE(relay.reports.size() == 1);
    CHECK(relay.reports[0].up_bytes == total);
    CHECK(relay.reports[0].down_bytes == 0);
    CHECK(relay.reports[0].reason == "peer_close");
    CHECK(relay.server->counters().up_bytes == total);
}

TEST_CASE("1,000 concurrent relayed connections, each one's bytes verified") {
    constexpr std::size_t n = 1000;
    raise_fd_limit(8 * n);
    if (open_fd_limit() < 5 * n) {
        MESSAGE("skipped: the open-files limit is " << open_fd_limit());
        return;
    }
    Loop loop;
    NetConf deep;
    deep.backlog = 4096;  // every client connects in the same iteration
    auto upstream = echo_server(loop, Family::ipv4, deep);
    RelayConfig c = config(Scheme::tcp, Scheme::tcp, upstream->local_address());
    c.conf.backlog = 4096;
    c.connect_timeout = 20s;
    TestRelay relay(loop, c);
    std::vector<PipePtr> clients;
    std::vector<std::string> want(n), got(n);
    for (std::size_t i = 0; i < n; ++i) {
        want[i] =
            "connection " + std::to_string(i) + ":" + std::string(1000 + i % 97, 'a' + i % 26);
        auto p = must(Pipe::connect(loop, relay.addr(), [] {
            NetConf nc;
            nc.con_timeout = 20s;
            return nc;
        }()));
        p->on_message([&got, i](Pipe&, const Message& m) { got[i] += m.data; });
        REQUIRE(!p->send(want[i]));
        clients.push_back(p);
    }
    std::size_t peak_open = 0;
    run_until(
        loop,
        [&] {
            peak_open = std::max(peak_open, relay.server->open_connections());
            for (std::size_t i = 0; i < n; ++i)
                if (got[i].size() < want[i].size()) return false;
            return true;
        },
        "every echo through the relay", 30s);
    std::size_t ok = 0;
    for (std::size_t i = 0; i < n; ++i) ok += got[i] == want[i];
    CHECK(ok == n);
    CHECK(peak_open == n);
    CHECK(relay.server->counters().accepted == n);
    for (auto& p : clients) p->close();
    run_until(
        loop, [&] { return relay.reports.size() == n; }, "every connection reported", 30s);
    CHECK(relay.server->open_connections() == 0);
    CHECK(relay.server->counters().failed == 0);
}

TEST_CASE("half-close: the client shuts its write side; the server's reply still arrives") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        // A blocking upstream that reads to EOF, then answers and closes (as `nc` would).
        const int lfd = ::socket(f == Family::ipv4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
        REQUIRE(lfd >= 0);
        Address bind_at = lo(f);
        REQUIRE(::bind(lfd, bind_at.sockaddr(), bind_at.sockaddr_len()) == 0);
        REQUIRE(::listen(lfd, 4) == 0);
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0);
        const Address upstream = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
        std::atomic<bool> saw_eof{false};
        std::string upstream_got;
        std::thread server([&] {
            timeval tv{5, 0};
            ::setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            const int c = ::accept(lfd, nullptr, nullptr);
            if (c < 0) return;
            ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[4096];
            for (;;) {
                const ssize_t r = ::recv(c, buf, sizeof buf, 0);
                if (r <= 0) {
                    saw_eof = r == 0;
                    break;
                }
                upstream_got.append(buf, static_cast<std::size_t>(r));
            }
            const std::string reply = "reply to " + upstream_got;
            (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
            ::close(c);
        });

        Loop loop;
        TestRelay relay(loop, config(Scheme::tcp, Scheme::tcp, upstream, f));
        auto client = must(Pipe::connect(loop, relay.addr()));
        run_until(
            loop, [&] { return client->is_up(); }, "client up");
        REQUIRE(::send(client->native_handle(), "request", 7, MSG_NOSIGNAL) == 7);
        REQUIRE(::shutdown(client->native_handle(), SHUT_WR) == 0);
        std::string got;
        std::optional<EndInfo> client_end;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        client->on_end([&](Pipe&, const EndInfo& e) { client_end = e; });
        run_until(
            loop, [&] { return client_end && relay.reports.size() == 1; }, "everything ends");
        server.join();
        ::close(lfd);
        CHECK(saw_eof);
        CHECK(upstream_got == "request");
        CHECK(got == "reply to request");
        CHECK(client_end->reason == EndReason::peer_close);
        REQUIRE(relay.reports.size() == 1);
        CHECK(relay.reports[0].reason == "peer_close");
        CHECK(relay.reports[0].up_bytes == 7);
        CHECK(relay.reports[0].down_bytes == 16);
    }
}

TEST_CASE("a reset passes through the relay both ways") {
    for (bool client_resets : {true, false}) {
        CAPTURE(client_resets);
        Loop loop;
        auto upstream = must(Pipe::listen(loop, lo(Family::ipv4)));
        PipePtr upstream_conn;
        std::optional<EndInfo> upstream_end;
        upstream->on_accept([&](Pipe&, const PipePtr& c) {
            upstream_conn = c;
            c->on_end([&](Pipe&, const EndInfo& e) { upstream_end = e; });
        });
        upstream->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
        TestRelay relay(loop, config(Scheme::tcp, Scheme::tcp, upstream->local_address()));
        NetConf abortive;
        abortive.linger = std::chrono::seconds(0);
        auto client = must(Pipe::connect(loop, relay.addr(), abortive));
        std::string got;
        std::optional<EndInfo> client_end;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        client->on_end([&](Pipe&, const EndInfo& e) { client_end = e; });
        REQUIRE(!client->send("hi"));
        run_until(
            loop, [&] { return got == "hi"; }, "echo through the relay");
        if (client_resets) {
            client->close();  // linger 0: a reset
            run_until(
                loop, [&] { return upstream_end && relay.reports.size() == 1; }, "ends");
            CHECK(upstream_end->reason == EndReason::peer_reset);
            CHECK(relay.reports[0].side == "client");
        } else {
            // The upstream resets: an abortive close of the accepted pipe's socket.
            linger l{1, 0};
            ::setsockopt(upstream_conn->native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
            upstream_conn->close();
            run_until(
                loop, [&] { return client_end && relay.reports.size() == 1; }, "ends");
            CHECK(client_end->reason == EndReason::peer_reset);
            CHECK(relay.reports[0].side == "target");
        }
        CHECK(relay.reports[0].reason == "peer_reset");
    }
}

TEST_CASE("a stalled consumer: the relay stops reading; queued bytes stay bounded") {
    Loop loop;
    RelayConfig c;
    auto sink = must(Pipe::listen(loop, lo(Family::ipv4)));
    PipePtr sink_conn;
    std::size_t sunk = 0;
    sink->on_accept([&](Pipe&, const PipePtr& p) {
        sink_conn = p;
        p->pause();  // the consumer does not read until told to
    });
    sink->on_message([&](Pipe&, const Message& m) { sunk += m.data.size(); });
    c = config(Scheme::tcp, Scheme::tcp, sink->local_address());
    c.conf.high_watermark = 256 * 1024;
    c.conf.low_watermark = 64 * 1024;
    TestRelay relay(loop, c);
    auto producer = must(Pipe::connect(loop, relay.addr()));

    const std::size_t total = 32 * 1024 * 1024;
    const std::string chunk(64 * 1024, 'p');
    std::size_t produced = 0, max_queued = 0;
    auto pump = [&] {
        while (produced < total && producer->write_queue_bytes() < 512 * 1024) {
            REQUIRE(!producer->send(chunk));
            produced += chunk.size();
        }
        max_queued = std::max(max_queued, relay.server->queued_bytes());
    };
    auto pump_for = [&](std::chrono::milliseconds d) { run_for(loop, d, pump); };
    run_until(
        loop,
        [&] {
            pump();
            return sink_conn && relay.server->counters().up_bytes > 2 * 1024 * 1024;
        },
        "the relay reads");
    pump_for(300ms);
    const std::uint64_t in_before = relay.server->counters().up_bytes;
    pump_for(300ms);
    // Nothing more is read from the producer while the consumer stalls...
    CHECK(relay.server->counters().up_bytes == in_before);
    // ...and what the relay holds is bounded by the watermark plus one read.
    const std::size_t bound = c.conf.high_watermark + c.conf.reader_limit;
    MESSAGE("most bytes queued in the relay: " << max_queued << " (bound " << bound << ")");
    CHECK(max_queued > 0);
    CHECK(max_queued <= bound);

    sink_conn->resume();
    run_until(
        loop,
        [&] {
            pump();
            return sunk == total;
        },
        "every byte reaches the consumer", 60s);
    CHECK(sunk == total);
    CHECK(max_queued <= bound);
}

TEST_CASE("UDP to UDP: one target pipe per source, replies to their source, idle reaped") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto echo = must(Pipe::udp(loop, lo(f)));
        std::set<Address> seen_sources;
        echo->on_message([&](Pipe& p, const Message& m) {
            seen_sources.insert(m.from);
            CHECK(!p.send_to("echo:" + std::string(m.data), m.from));
        });
        RelayConfig c = config(Scheme::udp, Scheme::udp, echo->local_address(), f);
        c.idle_timeout = 300ms;
        c.max_conns = 2;
        TestRelay relay(loop, c);
        auto a = must(Pipe::udp(loop, lo(f)));
        auto b = must(Pipe::udp(loop, lo(f)));
        auto third = must(Pipe::udp(loop, lo(f)));
        std::vector<std::string> got_a, got_b, got_third;
        a->on_message([&](Pipe&, const Message& m) {
            got_a.emplace_back(m.data);
            CHECK(m.from == relay.addr());
        });
        b->on_message([&](Pipe&, const Message& m) { got_b.emplace_back(m.data); });
        third->on_message([&](Pipe&, const Message& m) { got_third.emplace_back(m.data); });
        for (int i = 0; i < 3; ++i) {
            REQUIRE(!a->send_to("a" + std::to_string(i), relay.addr()));
            REQUIRE(!b->send_to("b" + std::to_string(i), relay.addr()));
        }
        run_until(
            loop, [&] { return got_a.size() == 3 && got_b.size() == 3; }, "replies per source");
        std::sort(got_a.begin(), got_a.end());
        std::sort(got_b.begin(), got_b.end());
        CHECK(got_a == std::vector<std::string>{"echo:a0", "echo:a1", "echo:a2"});
        CHECK(got_b == std::vector<std::string>{"echo:b0", "echo:b1", "echo:b2"});
        // Each source has a target pipe of its own (its own port at the echo server).
        CHECK(seen_sources.size() == 2);
        CHECK(relay.server->open_connections() == 2);
        // A third source is over --max-conns: dropped.
        REQUIRE(!third->send_to("t", relay.addr()));
        run_for(loop, 100ms);
        CHECK(got_third.empty());
        CHECK(relay.server->counters().refused == 1);
        // Silence reaps both sessions; then the third source gets in.
        run_until(
            loop, [&] { return relay.reports.size() == 2; }, "idle sources reaped");
        CHECK(relay.server->open_connections() == 0);
        for (const auto& r : relay.reports) {
            CHECK(r.reason == "idle_timeout");
            CHECK(r.up_bytes == 6);
            CHECK(r.down_bytes == 21);
            CHECK(r.duration >= 300ms);
        }
        REQUIRE(!third->send_to("t", relay.addr()));
        run_until(
            loop, [&] { return got_third.size() == 1; }, "the third source after the reaping");
        CHECK(got_third[0] == "echo:t");
    }
}

TEST_CASE("TCP to UDP and UDP to TCP with length framing on the TCP side") {
    SUBCASE("tcp listen, udp target: each message is a datagram") {
        Loop loop;
        auto echo = udp_echo(loop, Family::ipv4);
        RelayConfig c = config(Scheme::tcp, Scheme::udp, echo->local_address());
        c.idle_timeout = 300ms;
        TestRelay relay(loop, c);
        auto client = must(Pipe::connect(loop, relay.addr(), framed(Framer::message())));
        std::vector<std::string> got;
        client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
        REQUIRE(!client->send("first"));
        REQUIRE(!client->send(""));
        REQUIRE(!client->send(std::string(60000, 'x')));
        run_until(
            loop, [&] { return got.size() == 3; }, "messages back as messages");
        CHECK(got[0] == "first");
        CHECK(got[1].empty());
        CHECK(got[2] == std::string(60000, 'x'));
        // A FIN cannot be passed on to UDP (replies may still come): the session stays until
        // it has been idle.
        client->close();
        run_until(
            loop, [&] { return relay.reports.size() == 1; }, "closed");
        REQUIRE(relay.reports.size() == 1);
        CHECK(relay.reports[0].reason == "idle_timeout");
        CHECK(relay.reports[0].up_bytes == 5 + 0 + 60000);  // message bytes
        CHECK(relay.reports[0].down_bytes == 5 + 0 + 60000);
    }
    SUBCASE("udp listen, tcp target: each datagram is a message") {
        Loop loop;
        auto echo = echo_server(loop, Family::ipv4, framed(Framer::message()));
        TestRelay relay(loop, config(Scheme::udp, Scheme::tcp, echo->local_address()));
        auto client = must(Pipe::udp(loop, lo(Family::ipv4)));
        std::vector<std::string> got;
        client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
        REQUIRE(!client->send_to("one", relay.addr()));
        REQUIRE(!client->send_to("two", relay.addr()));
        run_until(
            loop, [&] { return got.size() == 2; }, "datagrams back");
        CHECK(got == std::vector<std::string>{"one", "two"});
        CHECK(relay.server->open_connections() == 1);
    }
}

TEST_CASE("an unreachable target: the client is reset and the reason reported") {
    Loop loop;
    TestRelay relay(loop, config(Scheme::tcp, Scheme::tcp, closed_port(Family::ipv4)));
    expect_target_failure(loop, relay, "refused");
}

TEST_CASE("--max-conns: a client over the limit is reset; a freed slot takes the next") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    RelayConfig c = config(Scheme::tcp, Scheme::tcp, upstream->local_address());
    c.max_conns = 2;
    TestRelay relay(loop, c);
    struct Client {
        PipePtr pipe;
        std::string got;
        std::optional<EndInfo> end;
    };
    std::vector<std::unique_ptr<Client>> clients;
    auto open_client = [&] {
        auto cl = std::make_unique<Client>();
        cl->pipe = must(Pipe::connect(loop, relay.addr()));
        Client* raw = cl.get();
        cl->pipe->on_message([raw](Pipe&, const Message& m) { raw->got += m.data; });
        cl->pipe->on_end([raw](Pipe&, const EndInfo& e) { raw->end = e; });
        REQUIRE(!cl->pipe->send("ping"));
        clients.push_back(std::move(cl));
        return raw;
    };
    Client* a = open_client();
    Client* b = open_client();
    run_until(
        loop, [&] { return a->got == "ping" && b->got == "ping"; }, "two relayed");
    Client* over = open_client();
    run_until(
        loop, [&] { return over->end.has_value(); }, "the third is refused");
    // A reset; when it comes before the client's own connect completes (one loop runs both
    // here), the library reports it as a connect error "connection reset by peer".
    CHECK((over->end->reason == EndReason::peer_reset ||
           over->end->error.message.find("reset by peer") != std::string::npos));
    CHECK(over->got.empty());
    CHECK(relay.server->counters().refused == 1);
    CHECK(relay.server->open_connections() == 2);
    a->pipe->close();
    run_until(
        loop, [&] { return relay.server->open_connections() == 1; }, "a slot frees");
    Client* next = open_client();
    run_until(
        loop, [&] { return next->got == "ping"; }, "the next is relayed");
    CHECK(!next->end);
}

// TCP to TCP, the idle timeout is the pipes' own (NetConf::idle_timeout).
TEST_CASE("--idle-timeout closes a silent connection, not a busy one") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    RelayConfig c = config(Scheme::tcp, Scheme::tcp, upstream->local_address());
    c.idle_timeout = 300ms;
    TestRelay relay(loop, c);
    auto quiet = must(Pipe::connect(loop, relay.addr()));
    auto busy = must(Pipe::connect(loop, relay.addr()));
    std::optional<EndInfo> quiet_end, busy_end;
    quiet->on_end([&](Pipe&, const EndInfo& e) { quiet_end = e; });
    busy->on_end([&](Pipe&, const EndInfo& e) { busy_end = e; });
    REQUIRE(!quiet->send("once"));
    const auto t0 = std::chrono::steady_clock::now();
    // The busy one sends every 50 ms.
    std::function<void()> tick = [&] {
        if (busy_end) return;
        (void)busy->send("tick");
        loop.call_later(50ms, tick);
    };
    tick();
    run_until(
        loop, [&] { return quiet_end.has_value(); }, "the silent one closes");
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= 300ms);
    CHECK(waited < 2s);
    REQUIRE(quiet_end);
    CHECK(quiet_end->reason == EndReason::peer_close);
    run_until(
        loop, [&] { return relay.reports.size() == 1; }, "reported");
    REQUIRE(relay.reports.size() == 1);
    CHECK(relay.reports[0].reason == "idle_timeout");
    CHECK(relay.reports[0].side == "relay");
    run_for(loop, 500ms);
    CHECK(!busy_end);
    busy->close();
    run_until(
        loop, [&] { return busy_end.has_value(); }, "busy closed");
}

TEST_CASE("shutdown: the listener closes, open connections finish within the grace period") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    TestRelay relay(loop, config(Scheme::tcp, Scheme::tcp, upstream->local_address()));
    const Address at = relay.addr();
    auto first = must(Pipe::connect(loop, at));
    auto second = must(Pipe::connect(loop, at));
    std::string got;
    first->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!first->send("before"));
    run_until(
        loop, [&] { return got == "before" && relay.server->open_connections() == 2; }, "relayed");
    bool done = false;
    relay.server->shutdown(400ms, [&] { done = true; });
    // New clients are refused at once: nothing listens any more.
    auto late = must(Pipe::connect(loop, at));
    std::optional<EndInfo> late_end;
    late->on_end([&](Pipe&, const EndInfo& e) { late_end = e; });
    run_until(
        loop, [&] { return late_end.has_value(); }, "the late client fails");
    CHECK(late_end->reason == EndReason::error);
    // Open connections go on.
    REQUIRE(!first->send(" after"));
    run_until(
        loop, [&] { return got == "before after"; }, "still relayed after shutdown()");
    first->close();
    run_until(
        loop, [&] { return relay.reports.size() == 1; }, "the first finishes on its own");
    CHECK(!done);
    // The second is closed when the grace period ends; then shutdown is done.
    run_until(
        loop, [&] { return done; }, "shutdown done");
    REQUIRE(relay.reports.size() == 2);
    CHECK(relay.reports[0].reason == "peer_close");
    CHECK(relay.reports[1].reason == "shutdown");
}

TEST_CASE("the command line: endpoints, options, and what is refused") {
    const char* ok[] = {
        "--framing",         "length", "--max-conns=10", "--idle-timeout", "1.5",
        "--connect-timeout", "0.25",   "--stats",        "--quiet",        "tcp://127.0.0.1:0",
        "udp://[::1]:53"};
    auto cl = parse_command_line(ok);
    REQUIRE(cl.ok());
    CHECK(cl->relay.framing == Framing::length);
    CHECK(cl->relay.max_conns == 10);
    CHECK(cl->relay.idle_timeout == std::chrono::milliseconds(1500));
    CHECK(cl->relay.connect_timeout == 250ms);
    CHECK(cl->stats);
    CHECK(cl->quiet);
    CHECK(cl->relay.listen.scheme == Scheme::tcp);
    CHECK(cl->relay.target.scheme == Scheme::udp);
    CHECK(cl->relay.target.address.to_string() == "[::1]:53");

    auto error_of = [](std::vector<const char*> args) {
        auto r = parse_command_line(args);
        return r ? std::string() : r.error().message;
    };
    CHECK(error_of({"tcp://127.0.0.1:0"}).find("expected LISTEN and TARGET") != std::string::npos);
    CHECK(error_of({"--bogus", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"}).find("--bogus") !=
          std::string::npos);
    CHECK(error_of({"--max-conns", "0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"})
              .find("--max-conns") != std::string::npos);
    CHECK(error_of({"--idle-timeout", "soon", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"})
              .find("--idle-timeout") != std::string::npos);
    CHECK(error_of({"--framing", "lines", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"})
              .find("raw or length") != std::string::npos);
    CHECK(error_of({"tcp://127.0.0.1:0", "udp://127.0.0.1:1"}).find("--framing length") !=
          std::string::npos);
    CHECK(error_of({"--framing", "length", "udp://127.0.0.1:0", "udp://127.0.0.1:1"})
              .find("udp to udp") != std::string::npos);
    CHECK(error_of({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"}).find("needs a port") !=
          std::string::npos);
    CHECK(error_of({"tcp://127.0.0.1:0", "tcp://::1:80"}).find("brackets") != std::string::npos);
    CHECK(error_of({"sctp://127.0.0.1:0", "tcp://127.0.0.1:1"}).find("unknown scheme") !=
          std::string::npos);
    auto help = parse_command_line(std::vector<const char*>{"--bogus", "--help"});
    REQUIRE(help);
    CHECK(help->help);
    auto version = parse_command_line(std::vector<const char*>{"--bogus", "--version"});
    REQUIRE(version);
    CHECK(version->version);
    CHECK(!version->help);

    // --frame-timeout: length framing only; 0 is no bound; unset, the server's default.
    auto framed = parse_command_line(std::vector<const char*>{
        "--framing", "length", "--frame-timeout", "2.5", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"});
    REQUIRE(framed.ok());
    CHECK(framed->relay.frame_timeout == 2500ms);
    auto unbounded = parse_command_line(std::vector<const char*>{
        "--framing=length", "--frame-timeout=0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"});
    REQUIRE(unbounded.ok());
    CHECK(unbounded->relay.frame_timeout == 0ms);
    CHECK(!cl->relay.frame_timeout);
    CHECK(kDefaultFrameTimeout == 10s);
    CHECK(error_of({"--frame-timeout", "5", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"})
              .find("--frame-timeout applies to --framing length") != std::string::npos);
    CHECK(error_of({"--framing", "length", "--frame-timeout", "soon", "tcp://127.0.0.1:0",
                    "tcp://127.0.0.1:1"})
              .find("--frame-timeout: expected seconds") != std::string::npos);
    CHECK(error_of({"--framing", "length", "--frame-timeout", "-2", "tcp://127.0.0.1:0",
                    "tcp://127.0.0.1:1"})
              .find("--frame-timeout: expected seconds") != std::string::npos);
    CHECK(error_of({"--framing", "length", "--frame-timeout"})
              .find("--frame-timeout: needs a "
                    "value") != std::string::npos);
    // --idle-timeout 0: never, TCP to TCP; a UDP side needs a timeout to reap its flows.
    auto never = parse_command_line(
        std::vector<const char*>{"--idle-timeout", "0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"});
    REQUIRE(never.ok());
    CHECK(never->relay.idle_timeout == 0ms);
    CHECK(error_of({"--idle-timeout", "0", "udp://127.0.0.1:0", "udp://127.0.0.1:1"})
              .find("--idle-timeout: must be > 0 when a side is UDP") != std::string::npos);
    // A positive value too small for a millisecond is not "never".
    auto tiny = parse_command_line(std::vector<const char*>{
        "--idle-timeout", "0.0001", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"});
    REQUIRE(tiny.ok());
    CHECK(tiny->relay.idle_timeout == 1ms);
}

TEST_CASE("the command line: tls:// sides, their options, and what is refused") {
    auto parse = [](std::vector<const char*> args) { return parse_command_line(args); };
    auto error_of = [](std::vector<const char*> args) {
        auto r = parse_command_line(args);
        return r ? std::string() : r.error().message;
    };

    auto terminate = parse({"--cert", "relay.pem", "--key=relay.key", "--alpn", "h2,http/1.1",
                            "tls://127.0.0.1:0", "tcp://127.0.0.1:1"});
    REQUIRE(terminate.ok());
    const RelayConfig& t = terminate->relay;
    CHECK(t.listen.scheme == Scheme::tls);
    CHECK(t.target.scheme == Scheme::tcp);
    CHECK(t.listen_tls.cert_file == "relay.pem");
    CHECK(t.listen_tls.key_file == "relay.key");
    CHECK(t.listen_tls.alpn == std::vector<std::string>{"h2", "http/1.1"});
    CHECK(!t.listen_tls.require_client_cert);
    CHECK(t.listen_tls.ca_file.empty());
    CHECK(t.target_tls.alpn.empty());
    CHECK(t.framing == Framing::raw);  // a TLS side is a TCP side

    auto originate = parse({"--ca", "ca.pem", "--verify-host", "db.internal", "--alpn", "pg",
                            "tcp://127.0.0.1:0", "tls://[::1]:5432"});
    REQUIRE(originate.ok());
    const RelayConfig& o = originate->relay;
    CHECK(o.target.scheme == Scheme::tls);
    CHECK(o.target.host == "::1");
    CHECK(o.target.address.to_string() == "[::1]:5432");
    CHECK(o.target_tls.ca_file == "ca.pem");
    CHECK(o.target_tls.server_name == "db.internal");
    CHECK(o.target_tls.alpn == std::vector<std::string>{"pg"});
    CHECK(!o.target_tls.insecure_skip_verify);
    CHECK(o.listen_tls.alpn.empty());

    auto insecure = parse({"--insecure", "tcp://127.0.0.1:0", "tls://127.0.0.1:443"});
    REQUIRE(insecure.ok());
    CHECK(insecure->relay.target_tls.insecure_skip_verify);
    CHECK(insecure->relay.target.host == "127.0.0.1");

    // TLS to TLS: --ca serves both the target's certificate and the clients'.
    auto both = parse({"--cert", "c.pem", "--key", "k.pem", "--require-client-cert", "--ca",
                       "ca.pem", "tls://127.0.0.1:0", "tls://127.0.0.1:1"});
    REQUIRE(both.ok());
    CHECK(both->relay.listen_tls.require_client_cert);
    CHECK(both->relay.listen_tls.ca_file == "ca.pem");
    CHECK(both->relay.target_tls.ca_file == "ca.pem");
    // TLS to UDP, as TCP to UDP, needs length framing.
    CHECK(error_of({"--cert", "c", "--key", "k", "tls://127.0.0.1:0", "udp://127.0.0.1:1"})
              .find("relaying tls to udp needs --framing length") != std::string::npos);
    CHECK(parse({"--cert", "c", "--key", "k", "--framing", "length", "tls://127.0.0.1:0",
                 "udp://127.0.0.1:1"})
              .ok());

    struct Refused {
        std::vector<const char*> args;
        const char* says;
    };
    const std::vector<Refused> refused = {
        {{"tls://127.0.0.1:0", "tcp://127.0.0.1:1"}, "needs --cert FILE"},
        {{"--cert", "c.pem", "tls://127.0.0.1:0", "tcp://127.0.0.1:1"}, "needs --key FILE"},
        {{"--key", "k.pem", "tls://127.0.0.1:0", "tcp://127.0.0.1:1"}, "needs --cert FILE"},
        {{"--cert", "c.pem", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"},
         "--cert applies to a tls:// LISTEN"},
        {{"--key", "k.pem", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--key applies to a tls:// LISTEN"},
        {{"--require-client-cert", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"},
         "--require-client-cert applies to a tls:// LISTEN"},
        {{"--verify-host", "x", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--verify-host applies to a tls:// TARGET"},
        {{"--insecure", "--cert", "c", "--key", "k", "tls://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--insecure applies to a tls:// TARGET"},
        {{"--alpn", "h2", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--alpn applies to a tls:// side"},
        {{"--ca", "ca.pem", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--ca applies to a tls:// TARGET"},
        {{"--ca", "ca.pem", "--cert", "c", "--key", "k", "tls://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--ca applies to a tls:// TARGET, or to a tls:// LISTEN with --require-client-cert"},
        {{"--ca", "ca.pem", "--insecure", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"},
         "--ca: --insecure verifies nothing"},
        {{"--verify-host", "x", "--insecure", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"},
         "--verify-host: --insecure checks no name"},
        {{"--alpn", "h2,,x", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"}, "--alpn: expected"},
        {{"--alpn", "", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"}, "--alpn: expected"},
        {{"--cert", "", "tls://127.0.0.1:0", "tcp://127.0.0.1:1"}, "--cert: needs a value"},
        {{"tcp://127.0.0.1:0", "tls://127.0.0.1:1", "--ca"}, "--ca: needs a value"},
        {{"--insecure=yes", "tcp://127.0.0.1:0", "tls://127.0.0.1:1"},
         "--insecure: takes no value"},
        {{"tcp://127.0.0.1:0", "tls://127.0.0.1:0"}, "needs a port"},
        {{"tcp://127.0.0.1:0", "ssl://127.0.0.1:1"}, "use tcp://, tls:// or udp://"},
    };
    for (const Refused& r : refused) {
        CAPTURE(r.says);
        const std::string e = error_of(r.args);
        CAPTURE(e);
        CHECK(e.find(r.says) != std::string::npos);
    }
    // RelayServer::start checks a config made in code as the command line does.
    Loop loop;
    RelayConfig no_key = config(Scheme::tls, Scheme::tcp, lo(Family::ipv4, 9));
    no_key.listen_tls.cert_pem = "PEM";
    auto started = RelayServer::start(loop, no_key);
    REQUIRE(!started);
    CHECK(started.error().message.find("needs --key FILE") != std::string::npos);
}

// ---------------------------------------------------------------- the binary

TEST_CASE("pipeworks-relay: bad arguments print usage and exit 2; --help is a manual") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    struct Case {
        std::vector<std::string> args;
        const char* says;
    };
    const std::vector<Case> cases = {
        {{}, "expected LISTEN and TARGET"},
        {{"--nope", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"}, "unknown option"},
        {{"--max-conns", "-1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"}, "--max-conns"},
        {{"tls://127.0.0.1:0", "tcp://127.0.0.1:1"}, "needs --cert FILE"},
        {{"--cert", "c.pem", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--cert applies to a tls:// LISTEN"},
        {{"--insecure", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--insecure applies to a tls:// TARGET"},
        {{"tcp://127.0.0.1:0", "udp://127.0.0.1:1"}, "needs --framing length"},
        {{"tcp://127.0.0.1:0", "tcp://nonsense"}, "TARGET"},
        {{"--frame-timeout", "5", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--frame-timeout applies to --framing length"},
        {{"--framing", "length", "--frame-timeout", "x", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"},
         "--frame-timeout: expected seconds"},
    };
    for (const auto& c : cases) expect_bad_arguments(bin, c.args, c.says, "usage: pipeworks-relay");
    Child help({bin, "--help"});
    CHECK(help.wait_exit() == 0);
    for (const char* section : {"NAME",
                                "SYNOPSIS",
                                "OPTIONS",
                                "SIGNALS",
                                "EXAMPLES",
                                "--max-conns",
                                "--idle-timeout",
                                "--frame-timeout",
                                "--connect-timeout",
                                "--stats",
                                "--quiet",
                                "accept failed",
                                "forever (default 10; 0: no bound)",
                                "tls://HOST:PORT",
                                "--cert FILE, --key FILE",
                                "--ca FILE",
                                "--verify-host NAME",
                                "--alpn LIST",
                                "--insecure",
                                "--require-client-cert",
                                "TLS handshake failed",
                                "tls_failed="})
        CHECK(help.out_text.find(section) != std::string::npos);
    // The usage text, printed with every refusal, gives the defaults.
    Child bad({bin, "--bogus", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"});
    CHECK(bad.wait_exit() == 2);
    for (const char* text : {"[--frame-timeout S]", "defaults:", "--frame-timeout 10 (length",
                             "--idle-timeout 300", "--max-conns 4096 for TCP",
                             "[--cert FILE --key FILE]", "[--insecure]", "tls://HOST:PORT"})
        CHECK(bad.err_text.find(text) != std::string::npos);
}

TEST_CASE("pipeworks-relay: first line, relaying, --stats lines, SIGUSR1, SIGTERM exits 0") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    Child relay(
        {bin, "--stats", "tcp://127.0.0.1:0", "tcp://" + upstream->local_address().to_string()});
    const Address at = listening_address(relay, "127.0.0.1", &loop);

    auto client = must(Pipe::connect(loop, at));
    std::string got;
    client->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!client->send("through the binary"));
    run_until(
        loop, [&] { return got == "through the binary"; }, "echo through pipeworks-relay");
    client->close();
    run_until(
        loop, [&] { return client->ended(); }, "client closed");
    CHECK(relay.wait_for([&] { return relay.out_text.find("closed id=1 ") != std::string::npos; },
                         &loop));
    CHECK(relay.out_text.find("up_bytes=18 down_bytes=18") != std::string::npos);
    CHECK(relay.out_text.find("reason=peer_close side=client") != std::string::npos);

    REQUIRE(::kill(relay.pid, SIGUSR1) == 0);
    CHECK(relay.wait_for(
        [&] { return relay.out_text.find("totals open=0 accepted=1") != std::string::npos; },
        &loop));
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    CHECK(relay.wait_exit(&loop) == 0);
    CHECK(relay.err_text.find("SIGTERM") != std::string::npos);
}

TEST_CASE("pipeworks-relay: SIGTERM with a connection open waits for it, up to --grace") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    Child relay({bin, "--quiet", "--stats", "--grace", "0.5", "tcp://127.0.0.1:0",
                 "tcp://" + upstream->local_address().to_string()});
    const Address at = listening_address(relay, "127.0.0.1", &loop);
    auto client = must(Pipe::connect(loop, at));
    std::string got;
    std::optional<EndInfo> end;
    client->on_message([&](Pipe&, const Message& m) { got += m.data; });
    client->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    REQUIRE(!client->send("x"));
    run_until(
        loop, [&] { return got == "x"; }, "relayed");
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    const auto t0 = std::chrono::steady_clock::now();
    // Still relayed during the grace period, then closed; the relay exits 0.
    run_for(loop, 100ms);
    REQUIRE(!client->send("y"));
    run_until(
        loop, [&] { return got == "xy"; }, "relayed during the grace period");
    run_until(
        loop, [&] { return end.has_value(); }, "closed at the end of the grace period");
    CHECK(std::chrono::steady_clock::now() - t0 >= 400ms);
    CHECK(relay.wait_exit(&loop) == 0);
    CHECK(relay.out_text.find("reason=shutdown side=relay") != std::string::npos);
    CHECK(relay.err_text.empty());  // --quiet
}

TEST_CASE("pipeworks-relay: a second SIGTERM or SIGINT while it stops, a connection open: exit 0") {
    // The second signal ends the grace period at once; the ones after it, some landing in the
    // relay's last steps, change nothing: the exit status stays 0.
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    for (int round = 0; round < 5; ++round) {
        for (int sig : {SIGTERM, SIGINT}) {
            CAPTURE(round);
            CAPTURE(sig);
            Loop loop;
            auto upstream = echo_server(loop, Family::ipv4);
            Child relay(
                {bin, "tcp://127.0.0.1:0", "tcp://" + upstream->local_address().to_string()});
            const Address at = listening_address(relay, "127.0.0.1", &loop);
            auto client = must(Pipe::connect(loop, at));
            std::string got;
            client->on_message([&](Pipe&, const Message& m) { got += m.data; });
            REQUIRE(!client->send("held open"));
            run_until(
                loop, [&] { return got == "held open"; }, "relayed");
            CHECK(signal_until_exit(relay, sig, &loop) == 0);
            CAPTURE(relay.err_text);
            // One stop, however many signals.
            const auto first = relay.err_text.find("stopping;");
            CHECK(first != std::string::npos);
            CHECK(relay.err_text.find("stopping;", first + 1) == std::string::npos);
            run_until(
                loop, [&] { return client->ended(); }, "the client is closed");
        }
    }
}

TEST_CASE("--frame-timeout closes a connection whose message stops half-way") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4, framed(Framer::message()));
    RelayConfig c = config(Scheme::tcp, Scheme::tcp, upstream->local_address());
    c.framing = Framing::length;
    c.frame_timeout = 300ms;
    TestRelay relay(loop, c);
    // Raw bytes: a 4-byte length of 5, and 2 of the 5.
    auto stuck = must(Pipe::connect(loop, relay.addr()));
    std::optional<EndInfo> stuck_end;
    stuck->on_end([&](Pipe&, const EndInfo& e) { stuck_end = e; });
    REQUIRE(!stuck->send(bytes({0, 0, 0, 5, 'a', 'b'})));
    // Whole messages, then silence: nothing has begun, nothing to time.
    auto whole = must(Pipe::connect(loop, relay.addr(), framed(Framer::message())));
    std::vector<std::string> got;
    std::optional<EndInfo> whole_end;
    whole->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    whole->on_end([&](Pipe&, const EndInfo& e) { whole_end = e; });
    REQUIRE(!whole->send("whole"));
    const auto t0 = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return stuck_end.has_value(); }, "the stuck client is closed");
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= 250ms);
    CHECK(waited < 2s);
    run_until(
        loop, [&] { return relay.reports.size() == 1; }, "reported");
    REQUIRE(relay.reports.size() == 1);
    CHECK(relay.reports[0].side == "client");
    CHECK(relay.reports[0].reason == "timeout");
    CHECK_MESSAGE(relay.reports[0].detail.find("frame") != std::string::npos,
                  relay.reports[0].detail);
    CHECK(got == std::vector<std::string>{"whole"});
    run_for(loop, 500ms);
    CHECK(!whole_end);
    whole->close();
    run_until(
        loop, [&] { return whole_end.has_value(); }, "whole closed");
}

TEST_CASE("pipeworks-relay --idle-timeout 1: a silent connection is closed and reported") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    Child relay({bin, "--stats", "--grace", "0.5", "--idle-timeout", "1", "tcp://127.0.0.1:0",
                 "tcp://" + upstream->local_address().to_string()});
    const Address at = listening_address(relay, "127.0.0.1", &loop);
    auto client = must(Pipe::connect(loop, at));
    std::string got;
    std::optional<EndInfo> end;
    client->on_message([&](Pipe&, const Message& m) { got += m.data; });
    client->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    REQUIRE(!client->send("once"));
    run_until(
        loop, [&] { return got == "once"; }, "relayed");
    const auto t0 = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return end.has_value(); }, "closed when idle", 4s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(waited >= 900ms);
    CHECK(waited < 3s);
    CHECK(relay.wait_for(
        [&] { return relay.out_text.find("reason=idle_timeout side=relay") != std::string::npos; },
        &loop));
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    CHECK(relay.wait_exit(&loop) == 0);
}

TEST_CASE("pipeworks-relay: a failed accept is logged on stderr; relaying goes on") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    Child relay({bin, "--grace", "0.5", "tcp://127.0.0.1:0",
                 "tcp://" + upstream->local_address().to_string()});
    const Address at = listening_address(relay, "127.0.0.1", &loop);
    // Not one descriptor more: the next accept fails with EMFILE.
    const rlim_t before = set_open_file_limit(relay.pid, lowest_free_fd(relay.pid));
    auto refused = must(Pipe::connect(loop, at));
    (void)refused->send("no room");
    CHECK(relay.wait_for(
        [&] {
            return relay.err_text.find("pipeworks-relay: accept failed: ") != std::string::npos;
        },
        &loop));
    CAPTURE(relay.err_text);
    relay.poll();
    CHECK(!relay.status);
    set_open_file_limit(relay.pid, before);
    auto later = must(Pipe::connect(loop, at));
    std::string got;
    later->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!later->send("room again"));
    run_until(
        loop, [&] { return got == "room again"; }, "relayed once descriptors are free");
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    CHECK(relay.wait_exit(&loop) == 0);
}

// ---------------------------------------------------------------- tls://

TEST_CASE("tcp to tls: a plain client reaches a TLS server, verified, ALPN offered") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(f == Family::ipv4 ? "ipv4" : "ipv6");
        Loop loop;
        NetConf server_conf = tls_server();
        server_conf.tls.alpn = {"echo/1"};
        auto upstream = echo_server(loop, f, server_conf);
        TlsInfo upstream_tls;
        upstream->on_accept([&](Pipe&, const PipePtr& c) { upstream_tls = c->tls_info(); });
        std::vector<std::string> upstream_errors;
        upstream->on_error([&](Pipe&, const Error& e) { upstream_errors.push_back(e.message); });
        RelayConfig c = config(Scheme::tcp, Scheme::tls, upstream->local_address(), f);
        c.target_tls.ca_pem = pki().ca_pem;
        c.target_tls.alpn = {"other/2", "echo/1"};
        TestRelay relay(loop, c);
        const std::string msg(200'000, 'p');
        auto client = echo_round_trip(loop, relay.addr(), {}, msg);
        CHECK_MESSAGE(upstream_tls.established,
                      (upstream_errors.empty() ? std::string() : upstream_errors[0]));
        CHECK(upstream_tls.alpn == "echo/1");
        client->close();
        run_until(
            loop, [&] { return relay.reports.size() == 1; }, "reported");
        REQUIRE(relay.reports.size() == 1);
        CHECK(relay.reports[0].up_bytes == msg.size());
        CHECK(relay.reports[0].down_bytes == msg.size());
        CHECK(relay.reports[0].side == "client");
        CHECK(relay.server->counters().failed == 0);
        CHECK_MESSAGE(relay.logs.empty(), relay.logs[0]);
    }
}

TEST_CASE(
    "tls to tcp: a TLS client is relayed to a plain server; a failed handshake is "
    "counted and logged, and relaying goes on") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    TestRelay relay(loop, terminating(Scheme::tcp, upstream->local_address()));

    // A plaintext client on the TLS port: never relayed.
    auto plain = must(Pipe::connect(loop, relay.addr()));
    REQUIRE(!plain->send("GET / HTTP/1.0\r\n\r\n"));
    run_until(
        loop, [&] { return relay.server->counters().tls_failed == 1 && plain->ended(); },
        "the failed handshake is counted");
    REQUIRE(relay.logs.size() == 1);
    CHECK(relay.logs[0].starts_with("TLS handshake failed: "));
    CHECK(relay.server->counters().accepted == 0);

    const std::string msg(150'000, 't');
    auto client = echo_round_trip(loop, relay.addr(), tls_client(), msg);
    CHECK(client->tls_info().verified);
    CHECK(client->tls_info().peer_subject.find("localhost") != std::string::npos);
    CHECK(relay.server->open_connections() == 1);
    // close_notify and FIN pass through both ways: the client's pipe ends in order.
    std::optional<EndInfo> end;
    client->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    REQUIRE(!client->shutdown());
    run_until(
        loop, [&] { return end && relay.reports.size() == 1; }, "ended and reported");
    CHECK(end->reason == EndReason::peer_close);
    REQUIRE(relay.reports.size() == 1);
    CHECK(relay.reports[0].up_bytes == msg.size());
    CHECK(relay.reports[0].down_bytes == msg.size());
    CHECK_MESSAGE(relay.reports[0].reason == "peer_close", relay.reports[0].detail);
    CHECK(relay.reports[0].side == "client");
    const RelayCounters n = relay.server->counters();
    CHECK(n.accepted == 1);
    CHECK(n.failed == 0);
    CHECK(n.tls_failed == 1);
}

TEST_CASE(
    "tls to tls with client certificates: re-encrypted both ways; no certificate, no "
    "relay") {
    Loop loop;
    NetConf server_conf = tls_server();
    server_conf.tls.alpn = {"echo/1"};
    auto upstream = echo_server(loop, Family::ipv4, server_conf);
    RelayConfig c = terminating(Scheme::tls, upstream->local_address());
    c.listen_tls.ca_pem = pki().ca_pem;
    c.listen_tls.require_client_cert = true;
    c.listen_tls.alpn = {"echo/1"};
    c.target_tls.ca_pem = pki().ca_pem;
    c.target_tls.alpn = {"echo/1"};
    TestRelay relay(loop, c);

    // The relay's own certificate serves as the client's: the test CA signed it.
    NetConf with_cert = tls_client();
    with_cert.tls.cert_pem = pki().cert_pem;
    with_cert.tls.key_pem = pki().key_pem;
    with_cert.tls.alpn = {"echo/1"};
    auto client = echo_round_trip(loop, relay.addr(), with_cert, "twice encrypted");
    CHECK(client->tls_info().alpn == "echo/1");

    auto anonymous = must(Pipe::connect(loop, relay.addr(), tls_client()));
    (void)anonymous->send("let me in");
    run_until(
        loop, [&] { return anonymous->ended() && relay.server->counters().tls_failed == 1; },
        "a client without a certificate is refused");
    CHECK(relay.server->counters().accepted == 1);
    client->close();
    run_until(
        loop, [&] { return relay.reports.size() == 1; }, "reported");
}

TEST_CASE(
    "tcp -> relay (tls upstream) -> pipeworks-relay (tls listen) -> sink: 64 MiB, hash "
    "compared") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    const std::size_t total = 64u << 20;
    Loop loop;
    BulkSink sink(loop);
    Child terminator({bin, "--stats", "--cert", pki().cert_file, "--key", pki().key_file,
                      "tls://127.0.0.1:0", "tcp://" + sink.server->local_address().to_string()});
    const Address tls_at = listening_address(terminator, "127.0.0.1", &loop);
    // The originating relay as a user would configure it: by name, trusting the test CA file.
    auto cl = parse_command_line(
        std::vector<const char*>{"--ca", pki().ca_file.c_str(), "--verify-host", "localhost",
                                 "tcp://127.0.0.1:0", ("tls://" + tls_at.to_string()).c_str()});
    REQUIRE(cl.ok());
    TestRelay originator(loop, cl->relay);
    BulkSender sender(must(Pipe::connect(loop, originator.addr())), total);
    const auto t0 = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return sink.end.has_value() && originator.reports.size() == 1; },
        "the whole transfer", 60s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("64 MiB through two TLS relays in " << secs << " s");
    CHECK(sink.received.total == total);
    CHECK(sink.received.digest() == sender.sent.digest());
    CHECK(sink.end->reason == EndReason::peer_close);
    REQUIRE(originator.reports.size() == 1);
    CHECK(originator.reports[0].up_bytes == total);
    CHECK(originator.reports[0].reason == "peer_close");
    CHECK(originator.logs.empty());
    CHECK(terminator.wait_for(
        [&] {
            return terminator.out_text.find("up_bytes=" + std::to_string(total) +
                                            " down_bytes=0") != std::string::npos;
        },
        &loop));
    REQUIRE(::kill(terminator.pid, SIGTERM) == 0);
    CHECK(terminator.wait_exit(&loop) == 0);
    CHECK(terminator.out_text.find("tls_failed=0") != std::string::npos);
}

TEST_CASE(
    "a tls:// target with an untrusted certificate, or one for another name: the client "
    "is reset, the relay reports it") {
    // The good certificate is for localhost and 127.0.0.1; the name checked is TARGET's host,
    // or --verify-host's.
    struct Case {
        const char* what;
        std::string cert, host, verify_host;
        const char* says;
    };
    const Case cases[] = {
        {"signed by a CA the relay does not trust", pki().untrusted_pem, "", "",
         "certificate verify failed"},
        {"TARGET named by a host the certificate does not carry", pki().cert_pem,
         "elsewhere.invalid", "", "mismatch"},
        {"--verify-host names another host", pki().cert_pem, "localhost", "elsewhere.invalid",
         "mismatch"},
    };
    for (const Case& k : cases) {
        CAPTURE(k.what);
        Loop loop;
        auto upstream = echo_server(loop, Family::ipv4, tls_server(k.cert));
        RelayConfig c = config(Scheme::tcp, Scheme::tls, upstream->local_address());
        c.target.host = k.host;
        c.target_tls.ca_pem = pki().ca_pem;
        c.target_tls.server_name = k.verify_host;
        TestRelay relay(loop, c);
        expect_target_failure(loop, relay, k.says);
    }
}

TEST_CASE("pipeworks-relay --insecure: a loud warning, then an unverified target is relayed") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4, tls_server(pki().untrusted_pem));
    const std::string target = "tls://" + upstream->local_address().to_string();
    Child relay({bin, "--quiet", "--grace", "0.5", "--insecure", "tcp://127.0.0.1:0", target});
    const Address at = listening_address(relay, "127.0.0.1", &loop);
    CHECK(relay.wait_for([&] { return relay.err_text.find('\n') != std::string::npos; }, &loop));
    CHECK(relay.err_text.starts_with("pipeworks-relay: WARNING: --insecure: "));
    CHECK(relay.err_text.find(target + " is not verified") != std::string::npos);
    echo_round_trip(loop, at, {}, "unverified but encrypted")->close();
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    CHECK(relay.wait_exit(&loop) == 0);

    // Without --insecure the same target is refused, and the refusal reported.
    Child strict({bin, "--stats", "tcp://127.0.0.1:0", target});
    const Address strict_at = listening_address(strict, "127.0.0.1", &loop);
    auto refused = must(Pipe::connect(loop, strict_at));
    (void)refused->send("x");
    CHECK(strict.wait_for(
        [&] {
            return strict.out_text.find("reason=error side=target detail=") != std::string::npos;
        },
        &loop));
    CHECK(strict.err_text.find("certificate verify failed") != std::string::npos);
    CHECK(strict.err_text.find("WARNING") == std::string::npos);
    REQUIRE(::kill(strict.pid, SIGTERM) == 0);
    CHECK(strict.wait_exit(&loop) == 0);
    CHECK(strict.out_text.find("failed=1") != std::string::npos);
}

TEST_CASE("pipeworks-relay: a tls:// LISTEN whose certificate cannot be read exits 1 saying why") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    const std::string missing = (pki().dir / "missing.pem").string();
    Child relay({bin, "--cert", missing, "--key", pki().key_file, "tls://127.0.0.1:0",
                 "tcp://127.0.0.1:1"});
    CHECK(relay.wait_exit() == 1);
    CHECK(relay.err_text.find(missing) != std::string::npos);
    CHECK(relay.out_text.empty());
}

TEST_CASE(
    "shutdown with a tls:// LISTEN: no new client is relayed, the open one goes on until "
    "the grace period ends") {
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    TestRelay relay(loop, terminating(Scheme::tcp, upstream->local_address()));
    auto open = echo_round_trip(loop, relay.addr(), tls_client(), "before");
    bool done = false;
    relay.server->shutdown(400ms, [&] { done = true; });
    // The listener holds the open session, so it stays; it takes no one new.
    auto late = must(Pipe::connect(loop, relay.addr(), tls_client()));
    bool late_up = false;
    late->on_up([&](Pipe&) { late_up = true; });
    std::string got;
    open->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!open->send("after"));
    run_until(
        loop, [&] { return got == "after"; }, "still relayed after shutdown()");
    run_until(
        loop, [&] { return done; }, "shutdown done");
    run_until(
        loop, [&] { return late->ended() && open->ended(); }, "both clients end");
    CHECK(!late_up);
    REQUIRE(relay.reports.size() == 1);
    CHECK(relay.reports[0].reason == "shutdown");
    CHECK(relay.server->counters().accepted == 1);
}

// ------------------------------------------------------------------ targets by name, --dns

namespace {

// A TARGET as the command line gives it, the name left for the Resolver.
Endpoint named(std::string_view text) {
    return must(parse_endpoint(text, Resolve::later), "target by name");
}

// A relay to TARGET "scheme://host_port" by name, resolved through `dns`.
RelayConfig config_by_name(Scheme listen, Scheme target, const std::string& host_port,
                           const Dnsmasq& dns) {
    RelayConfig c = config(listen, target, {});
    c.target = named(std::string(to_string(target)) + "://" + host_port);
    c.dns_servers = {dns.address()};
    return c;
}

}  // namespace

TEST_CASE("the command line: a TARGET by name and --dns") {
    auto cl = parse_command_line(
        std::vector<const char*>{"--dns", "127.0.0.1:5353,[::1]:5300", "--dns=::1", "--dns",
                                 "10.0.0.53", "tcp://127.0.0.1:0", "tcp://app.pw.test:8080"});
    REQUIRE_MESSAGE(cl.ok(), cl.error().message);
    const Endpoint& t = cl->relay.target;
    CHECK(t.by_name());
    CHECK(t.host == "app.pw.test");
    CHECK(t.port_number() == 8080);
    CHECK(t.host_port() == "app.pw.test:8080");
    std::vector<std::string> servers;
    for (const Address& a : cl->relay.dns_servers) servers.push_back(a.to_string());
    CHECK(servers ==
          std::vector<std::string>{"127.0.0.1:5353", "[::1]:5300", "[::1]:53", "10.0.0.53:53"});
    // A numeric TARGET is an address at once; a name is not looked up while parsing.
    auto numeric = must(parse_endpoint("udp://[::1]:53", Resolve::later), "numeric");
    CHECK(!numeric.by_name());
    CHECK(numeric.host_port() == "[::1]:53");

    auto error_of = [](std::vector<const char*> args) {
        auto r = parse_command_line(args);
        return r ? std::string() : r.error().message;
    };
    for (const char* bad : {"dns.example", "127.0.0.1:0", "127.0.0.1:99999", "", "1.2.3.4,"}) {
        CAPTURE(bad);
        CHECK(error_of({"--dns", bad, "tcp://127.0.0.1:0", "tcp://app.pw.test:1"})
                  .find("--dns: expected SERVER[:PORT]") != std::string::npos);
    }
    CHECK(error_of({"--dns", "127.0.0.1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"})
              .find("--dns applies to a TARGET given by name") != std::string::npos);
    CHECK(error_of({"--dns"}).find("--dns: needs a value") != std::string::npos);
    CHECK(error_of({"tcp://127.0.0.1:0", "tcp://app.pw.test:0"}).find("needs a port") !=
          std::string::npos);
    CHECK(error_of({"tcp://127.0.0.1:0", "tcp://:80"}).find("TARGET") != std::string::npos);
}

TEST_CASE("a TCP TARGET by name: resolved per client through --dns; Happy Eyeballs picks") {
    Dnsmasq dns;
    Loop loop;
    // loop.pw.test has 127.0.0.1 and ::1; only 127.0.0.1 listens, so ::1 (tried first) refuses.
    auto upstream = echo_server(loop, Family::ipv4);
    const std::string port = std::to_string(upstream->local_address().port());
    RelayConfig c = config_by_name(Scheme::tcp, Scheme::tcp, "loop.pw.test:" + port, dns);
    TestRelay relay(loop, c);
    for (int i = 0; i < 2; ++i) {
        auto client = must(Pipe::connect(loop, relay.addr()));
        std::string got;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        REQUIRE(!client->send("by name"));
        run_until(
            loop, [&] { return got == "by name" || client->ended(); }, "echo through a name");
        CHECK(got == "by name");
        client->close();
        run_until(
            loop, [&] { return relay.reports.size() == static_cast<std::size_t>(i + 1); },
            "report");
        CHECK(relay.reports.back().target == upstream->local_address());
    }
    CHECK(relay.server->counters().failed == 0);
}

TEST_CASE("a TARGET name that does not exist: the client is reset, the reason says so") {
    Dnsmasq dns;
    Loop loop;
    RelayConfig c = config_by_name(Scheme::tcp, Scheme::tcp, "nothing.pw.test:80", dns);
    TestRelay relay(loop, c);
    expect_target_failure(loop, relay, "no such host nothing.pw.test");
    CHECK(relay.reports[0].target.empty());
}

TEST_CASE("a UDP TARGET by name: what comes before the name resolves waits, then goes out") {
    Dnsmasq dns;
    Loop loop;
    auto echo = udp_echo(loop, Family::ipv4);
    const std::string target = "lo4.pw.test:" + std::to_string(echo->local_address().port());
    std::vector<std::string> got;
    auto collect = [&](Pipe&, const Message& m) { got.emplace_back(m.data); };
    SUBCASE("from a UDP source: each datagram, replies to the source") {
        RelayConfig c = config_by_name(Scheme::udp, Scheme::udp, target, dns);
        c.idle_timeout = 300ms;
        TestRelay relay(loop, c);
        auto client = must(Pipe::udp(loop, lo(Family::ipv4)));
        client->on_message(collect);
        REQUIRE(!client->send_to("one", relay.addr()));
        REQUIRE(!client->send_to("two", relay.addr()));
        run_until(
            loop, [&] { return got.size() == 2; }, "both datagrams echoed");
        CHECK(got == std::vector<std::string>{"one", "two"});
        CHECK(relay.server->counters().dropped == 0);
        run_until(
            loop, [&] { return relay.reports.size() == 1; }, "idle session reaped");
        CHECK(relay.reports[0].target == echo->local_address());
        CHECK(relay.reports[0].up_bytes == 6);
        CHECK(relay.reports[0].down_bytes == 6);
    }
    SUBCASE("from a TCP client: each message a datagram (the link waits for the name)") {
        RelayConfig c = config_by_name(Scheme::tcp, Scheme::udp, target, dns);
        c.idle_timeout = 300ms;
        TestRelay relay(loop, c);
        auto client = must(Pipe::connect(loop, relay.addr(), framed(Framer::message())));
        client->on_message(collect);
        REQUIRE(!client->send("first"));
        REQUIRE(!client->send("second"));
        run_until(
            loop, [&] { return got.size() == 2; }, "both messages back");
        CHECK(got == std::vector<std::string>{"first", "second"});
    }
}

TEST_CASE("a TCP TARGET by name, UDP to TCP: the target's name comes from /etc/hosts") {
    // localhost is in every /etc/hosts; the DNS server given would never answer.
    SilentServer silent;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4, framed(Framer::message()));
    RelayConfig c = config(Scheme::udp, Scheme::tcp, {});
    c.target = named("tcp://localhost:" + std::to_string(upstream->local_address().port()));
    c.dns_servers = {silent.at};
    TestRelay relay(loop, c);
    auto client = must(Pipe::udp(loop, lo(Family::ipv4)));
    std::vector<std::string> got;
    client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    REQUIRE(!client->send_to("hosts", relay.addr()));
    run_until(
        loop, [&] { return !got.empty(); }, "a reply through localhost");
    CHECK(got == std::vector<std::string>{"hosts"});
}

TEST_CASE("pipeworks-relay --dns: a TARGET by name through the given server") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Dnsmasq dns;
    Loop loop;
    auto upstream = echo_server(loop, Family::ipv4);
    Child relay({bin, "--stats", "--dns", dns.address().to_string(), "tcp://127.0.0.1:0",
                 "tcp://lo4.pw.test:" + std::to_string(upstream->local_address().port())});
    const Address at = listening_address(relay, "127.0.0.1", &loop);
    auto client = must(Pipe::connect(loop, at));
    std::string got;
    client->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!client->send("named"));
    run_until(
        loop, [&] { return got == "named"; }, "echo through pipeworks-relay by name");
    client->close();
    CHECK(relay.wait_for(
        [&] {
            return relay.out_text.find("target=" + upstream->local_address().to_string()) !=
                   std::string::npos;
        },
        &loop));
    run_until(
        loop, [&] { return client->ended(); }, "client closed");
    REQUIRE(::kill(relay.pid, SIGTERM) == 0);
    CHECK(relay.wait_exit(&loop) == 0);

    // A name that does not exist: the stats line names the TARGET as given.
    Child nowhere({bin, "--stats", "--dns", dns.address().to_string(), "tcp://127.0.0.1:0",
                   "tcp://nothing.pw.test:80"});
    const Address at2 = listening_address(nowhere, "127.0.0.1", &loop);
    auto c2 = must(Pipe::connect(loop, at2));
    run_until(
        loop, [&] { return c2->ended(); }, "reset");
    CHECK(nowhere.wait_for(
        [&] {
            return nowhere.out_text.find("target=nothing.pw.test:80") != std::string::npos &&
                   nowhere.err_text.find("no such host nothing.pw.test") != std::string::npos;
        },
        &loop));
    REQUIRE(::kill(nowhere.pid, SIGTERM) == 0);
    CHECK(nowhere.wait_exit(&loop) == 0);
}

TEST_CASE("pipeworks-relay --version prints the project's version and exits 0") {
    const std::string bin = binary_from_env("PIPEWORKS_RELAY_BIN");
    if (bin.empty()) return;
    Child v({bin, "--version"});
    CHECK(v.wait_exit() == 0);
    CHECK(v.out_text == std::string("pipeworks-relay ") + PIPEWORKS_VERSION_STRING + "\n");
    CHECK(std::string(pipeworks::version()) == PIPEWORKS_VERSION_STRING);
    CHECK(v.err_text.empty());
}
