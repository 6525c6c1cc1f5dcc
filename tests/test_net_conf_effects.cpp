// NetConf effects: every field shown by what it does to real sockets on loopback
// (127.0.0.1 and ::1, ports from the OS), or by what the OS reports for the pipe's socket.
#include "support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

namespace {

constexpr Family kFamilies[] = {Family::ipv4, Family::ipv6};

int sockopt_int(int fd, int level, int name) {
    int v = -1;
    socklen_t len = sizeof v;
    REQUIRE(::getsockopt(fd, level, name, &v, &len) == 0);
    return v;
}

bool fd_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

Address fd_local(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
}

// Runs the loop, waking at least every few milliseconds, until pred() holds: for conditions
// that no event of the loop signals (a raw fd becoming readable, another thread's work).
bool poll_until(Loop& loop, const std::function<bool()>& pred, const char* what) {
    // pred() may consume what it checks (a read): once it has held it is not asked again.
    bool held = false;
    auto check = [&] { return held || (held = pred()); };
    auto until = Clock::now() + kDeadline;
    while (!check()) {
        if (Clock::now() > until) {
            FAIL_CHECK("timed out waiting for: " << what);
            return false;
        }
        loop.run_until(check, 5ms);
    }
    return true;
}

// A connected pair: a server, a client, and the server's accepted end of it.
struct Pair {
    PipePtr server, client, accepted;
};

Pair connect_pair(Loop& loop, Family f, const NetConf& server_conf = {},
                  const NetConf& client_conf = {}) {
    Pair p;
    p.server = must(Pipe::listen(loop, lo(f), server_conf), "listen");
    p.client = must(Pipe::connect(loop, p.server->local_address(), client_conf), "connect");
    run_until(
        loop,
        [&] {
            if (!p.accepted)
                if (auto a = p.server->try_accept()) p.accepted = *a;
            return p.accepted && p.client->is_up();
        },
        "connection");
    REQUIRE(p.accepted);
    return p;
}

// Records how a pipe ended.
struct EndWatch {
    bool ended = false;
    EndInfo info;
    void watch(const PipePtr& p) {
        p->on_end([this](Pipe&, const EndInfo& e) {
            ended = true;
            info = e;
        });
    }
};

void close_and_wait(Loop& loop, const PipePtr& p) {
    p->close();
    run_until(
        loop, [&] { return p->ended(); }, "pipe end");
}

}  // namespace

// ------------------------------------------------------------------------------ reuse_addr

TEST_CASE("reuse_addr (TCP): re-listening on a port left in TIME_WAIT needs it") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf reuse;
        reuse.reuse_addr = true;
        Address port_addr;
        {
            auto [server, client, accepted] = connect_pair(loop, f, reuse);
            port_addr = server->local_address();
            EndWatch client_end;
            client_end.watch(client);
            // The server side closes first (closing a server closes what it accepted), so its
            // end of the connection passes through FIN_WAIT into TIME_WAIT on the server's port.
            server->close();
            run_until(
                loop, [&] { return client_end.ended && accepted->ended(); }, "both ends closed");
            CHECK(client_end.info.reason == EndReason::peer_close);
        }
        {
            auto again = Pipe::listen(loop, port_addr, NetConf{});
            REQUIRE_FALSE(again);
            CAPTURE(again.error().message);
            CHECK(again.error().code == uv_error_code(UV_EADDRINUSE));
        }
        auto again = Pipe::listen(loop, port_addr, reuse);
        REQUIRE_MESSAGE(again, again.error().message);
        CHECK(again.value()->local_address() == port_addr);
        // And it serves.
        auto c = must(Pipe::connect(loop, port_addr), "connect to the new listener");
        run_until(
            loop, [&] { return c->is_up() && again.value()->clients().size() == 1; },
            "connection to the new listener");
    }
}

TEST_CASE("reuse_addr (UDP): two pipes share a port only when both ask for it") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf reuse;
        reuse.reuse_addr = true;

        auto plain = must(Pipe::udp(loop, lo(f)), "udp");
        Address taken = plain->local_address();
        CHECK(sockopt_int(plain->native_handle(), SOL_SOCKET, SO_REUSEADDR) == 0);
        auto second = Pipe::udp(loop, taken, {}, NetConf{});
        REQUIRE_FALSE(second);
        CHECK(second.error().code == uv_error_code(UV_EADDRINUSE));
        // The first pipe did not agree to share its port: asking on the second side only is
        // not enough.
        auto one_sided = Pipe::udp(loop, taken, {}, reuse);
        REQUIRE_FALSE(one_sided);
        CHECK(one_sided.error().code == uv_error_code(UV_EADDRINUSE));

        auto a = must(Pipe::udp(loop, lo(f), {}, reuse), "udp with reuse_addr");
        CHECK(sockopt_int(a->native_handle(), SOL_SOCKET, SO_REUSEADDR) == 1);
        auto b = Pipe::udp(loop, a->local_address(), {}, reuse);
        REQUIRE_MESSAGE(b, b.error().message);
        CHECK(b.value()->local_address() == a->local_address());
        CHECK(b.value()->local_address().port() == a->local_address().port());
        auto c = Pipe::udp(loop, a->local_address(), {}, NetConf{});
        CHECK_FALSE(c);
    }
}

// ------------------------------------------------------------------------------ broadcast

TEST_CASE("broadcast: a datagram to 127.255.255.255 needs it, and reaches a 0.0.0.0 receiver") {
    // Linux routes 127.255.255.255 as the broadcast address of lo ("ip route show table local":
    // "broadcast 127.255.255.255 dev lo"), so this stays on the loopback interface.
    Loop loop;
    auto rx = must(Pipe::udp(loop, Address::any(Family::ipv4)), "receiver on 0.0.0.0");
    const std::uint16_t port = rx->local_address().port();
    const Address bcast = must(Address::ip("127.255.255.255", port), "broadcast address");
    std::vector<std::string> got;
    rx->on_message([&](Pipe&, const Message& m) {
        // Only this test's datagrams: anything else on the port is not ours to count.
        if (m.data.starts_with("bcast-")) got.emplace_back(m.data);
    });

    auto without = must(Pipe::udp(loop, lo(Family::ipv4)), "sender without broadcast");
    CHECK(sockopt_int(without->native_handle(), SOL_SOCKET, SO_BROADCAST) == 0);
    Error refused = without->send_to("bcast-refused", bcast);
    REQUIRE(refused);
    CAPTURE(refused.message);
    CHECK(refused.code == uv_error_code(UV_EACCES));
    CHECK(without->stats().msgs_out == 0);

    NetConf bc;
    bc.broadcast = true;
    auto with = must(Pipe::udp(loop, lo(Family::ipv4), {}, bc), "sender with broadcast");
    CHECK(sockopt_int(with->native_handle(), SOL_SOCKET, SO_BROADCAST) == 1);
    REQUIRE_FALSE(with->send_to("bcast-delivered", bcast));
    run_until(
        loop, [&] { return !got.empty(); }, "broadcast datagram");
    run_for(loop, 30ms);
    CHECK(got == std::vector<std::string>{"bcast-delivered"});

    // A pipe whose default destination is the broadcast address behaves the same.
    auto dflt = must(Pipe::udp(loop, lo(Family::ipv4), bcast, bc), "broadcast destination");
    REQUIRE_FALSE(dflt->send("bcast-default"));
    run_until(
        loop, [&] { return got.size() == 2; }, "second broadcast datagram");
    CHECK(got.back() == "bcast-default");
}

// ------------------------------------------------------------------------------ linger

TEST_CASE("linger: 0 s makes a close reset the connection; SO_LINGER is set on the socket") {
    SUBCASE("without linger the peer sees an orderly close") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            auto [server, client, accepted] = connect_pair(loop, f);
            EndWatch peer;
            peer.watch(accepted);
            client->close();
            run_until(
                loop, [&] { return peer.ended; }, "peer end");
            CHECK(peer.info.reason == EndReason::peer_close);
        }
    }
    SUBCASE("linger 0 s on a client: the peer sees a reset") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf c;
            c.linger = seconds(0);
            auto [server, client, accepted] = connect_pair(loop, f, {}, c);
            EndWatch peer;
            peer.watch(accepted);
            REQUIRE_FALSE(client->send("some bytes first"));
            run_until(
                loop, [&] { return accepted->queued() == 1; }, "bytes at the peer");
            client->close();
            run_until(
                loop, [&] { return peer.ended; }, "peer end");
            CHECK(peer.info.reason == EndReason::peer_reset);
            CHECK(peer.info.error.code == uv_error_code(UV_ECONNRESET));
        }
    }
    SUBCASE("linger 0 s on a server applies to the pipes it accepts") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf s;
            s.linger = seconds(0);
            auto [server, client, accepted] = connect_pair(loop, f, s);
            EndWatch peer;
            peer.watch(client);
            accepted->close();
            run_until(
                loop, [&] { return peer.ended; }, "client end");
            CHECK(peer.info.reason == EndReason::peer_reset);
        }
    }
    SUBCASE("SO_LINGER as the OS reports it") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            for (int secs : {0, 3}) {
                CAPTURE(secs);
                NetConf c;
                c.linger = seconds(secs);
                auto [server, client, accepted] = connect_pair(loop, f, {}, c);
                EndWatch peer;
                peer.watch(accepted);
                // A second descriptor of the same socket keeps it alive past the pipe's end,
                // so the option the pipe set on close can be read back.
                int extra = ::dup(client->native_handle());
                REQUIRE(extra >= 0);
                close_and_wait(loop, client);
                linger l{};
                socklen_t len = sizeof l;
                REQUIRE(::getsockopt(extra, SOL_SOCKET, SO_LINGER, &l, &len) == 0);
                CHECK(l.l_onoff == 1);
                CHECK(l.l_linger == secs);
                CHECK_FALSE(peer.ended);  // the socket is still open through `extra`
                ::close(extra);
                run_until(
                    loop, [&] { return peer.ended; }, "peer end");
                CHECK(peer.info.reason ==
                      (secs == 0 ? EndReason::peer_reset : EndReason::peer_close));
            }
        }
    }
}

// ------------------------------------------------------------------------------ do_close

TEST_CASE("do_close=false: the OS socket outlives the pipe; do_close=true closes it") {
    SUBCASE("TCP client") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf keep;
            keep.do_close = false;
            auto [server, client, accepted] = connect_pair(loop, f, {}, keep);
            EndWatch peer;
            peer.watch(accepted);
            int fd = client->native_handle();
            REQUIRE(fd >= 0);
            Address local = client->local_address();
            close_and_wait(loop, client);
            CHECK(fd_open(fd));
            CHECK(fd_local(fd) == local);
            // The connection itself is still up: the peer has seen no close, and the socket
            // still carries bytes.
            run_for(loop, 50ms);
            CHECK_FALSE(peer.ended);
            REQUIRE_FALSE(accepted->send("after the pipe"));
            char buf[64];
            ssize_t n = -1;
            poll_until(
                loop,
                [&] {
                    n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                    return n > 0;
                },
                "bytes on the kept socket");
            CHECK(std::string(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0))) ==
                  "after the pipe");
            ::close(fd);
            run_until(
                loop, [&] { return peer.ended; }, "peer end after the owner closed");
            CHECK(peer.info.reason == EndReason::peer_close);
        }
    }
    SUBCASE("TCP server, and the pipes it accepts") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf keep;
            keep.do_close = false;
            auto [server, client, accepted] = connect_pair(loop, f, keep);
            EndWatch client_end;
            client_end.watch(client);
            int afd = accepted->native_handle();
            close_and_wait(loop, accepted);
            CHECK(fd_open(afd));
            run_for(loop, 50ms);
            CHECK_FALSE(client_end.ended);
            ::close(afd);
            run_until(
                loop, [&] { return client_end.ended; }, "client end");
            CHECK(client_end.info.reason == EndReason::peer_close);

            int sfd = server->native_handle();
            Address where = server->local_address();
            close_and_wait(loop, server);
            CHECK(fd_open(sfd));
            CHECK(sockopt_int(sfd, SOL_SOCKET, SO_ACCEPTCONN) == 1);
            // Still listening: the kernel completes a new connection on it.
            int raw = ::socket(f == Family::ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
            REQUIRE(raw >= 0);
            CHECK(::connect(raw, where.sockaddr(), where.sockaddr_len()) == 0);
            ::close(raw);
            ::close(sfd);
        }
    }
    SUBCASE("UDP") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf keep;
            keep.do_close = false;
            auto u = must(Pipe::udp(loop, lo(f), {}, keep), "udp");
            int fd = u->native_handle();
            Address local = u->local_address();
            close_and_wait(loop, u);
            CHECK(fd_open(fd));
            CHECK(fd_local(fd) == local);
            // Still bound: a datagram sent to it waits there.
            auto tx = must(Pipe::udp(loop, {}, local), "sender");
            REQUIRE_FALSE(tx->send("kept"));
            char buf[16];
            ssize_t n = -1;
            poll_until(
                loop,
                [&] {
                    n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                    return n > 0;
                },
                "datagram on the kept socket");
            CHECK(n == 4);
            ::close(fd);
        }
    }
    SUBCASE("do_close=true (the default) closes the socket") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            auto [server, client, accepted] = connect_pair(loop, f);
            auto u = must(Pipe::udp(loop, lo(f)), "udp");
            // Every fd first: closing one end of the connection ends the other too.
            std::vector<std::pair<PipePtr, int>> fds;
            for (auto& p : {client, accepted, server, u}) {
                fds.emplace_back(p, p->native_handle());
                REQUIRE(fds.back().second >= 0);
            }
            for (auto& [p, fd] : fds) {
                CAPTURE(std::string(to_string(p->kind())));
                close_and_wait(loop, p);
                errno = 0;
                CHECK_FALSE(fd_open(fd));
                CHECK(errno == EBADF);
                CHECK(p->native_handle() == -1);
            }
        }
    }
}

// ------------------------------------------------------------------------------ nodelay, keepalive

TEST_CASE("nodelay: TCP_NODELAY is on by default and off when false, on both ends") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        {
            auto [server, client, accepted] = connect_pair(loop, f);
            CHECK(sockopt_int(client->native_handle(), IPPROTO_TCP, TCP_NODELAY) == 1);
            CHECK(sockopt_int(accepted->native_handle(), IPPROTO_TCP, TCP_NODELAY) == 1);
        }
        {
            NetConf off;
            off.nodelay = false;
            auto [server, client, accepted] = connect_pair(loop, f, off, off);
            CHECK(sockopt_int(client->native_handle(), IPPROTO_TCP, TCP_NODELAY) == 0);
            CHECK(sockopt_int(accepted->native_handle(), IPPROTO_TCP, TCP_NODELAY) == 0);
            // Data still flows.
            REQUIRE_FALSE(client->send("x"));
            run_until(
                loop, [&] { return accepted->queued() == 1; }, "byte");
        }
    }
}

TEST_CASE("keepalive: SO_KEEPALIVE and TCP_KEEPIDLE follow the setting, on both ends") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        {
            auto [server, client, accepted] = connect_pair(loop, f);
            CHECK(sockopt_int(client->native_handle(), SOL_SOCKET, SO_KEEPALIVE) == 0);
            CHECK(sockopt_int(accepted->native_handle(), SOL_SOCKET, SO_KEEPALIVE) == 0);
        }
        for (int idle : {7, 45}) {
            CAPTURE(idle);
            NetConf ka;
            ka.keepalive = seconds(idle);
            auto [server, client, accepted] = connect_pair(loop, f, ka, ka);
            for (auto& p : {client, accepted}) {
                CHECK(sockopt_int(p->native_handle(), SOL_SOCKET, SO_KEEPALIVE) == 1);
                CHECK(sockopt_int(p->native_handle(), IPPROTO_TCP, TCP_KEEPIDLE) == idle);
            }
        }
    }
}

// ------------------------------------------------------------------------------ sock_only

TEST_CASE("sock_only: the pipe never reads; the owner reads the native socket") {
    SUBCASE("TCP client") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf raw;
            raw.sock_only = true;
            auto [server, client, accepted] = connect_pair(loop, f, {}, raw);
            int messages = 0;
            client->on_message([&](Pipe&, const Message&) { ++messages; });
            REQUIRE_FALSE(accepted->send("for the owner"));
            std::string got;
            poll_until(
                loop,
                [&] {
                    char buf[64];
                    ssize_t n = ::recv(client->native_handle(), buf, sizeof buf, MSG_DONTWAIT);
                    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
                    return got.size() >= 13;
                },
                "bytes read from the native socket");
            CHECK(got == "for the owner");
            // More bytes, left unread: the pipe does not take them either.
            REQUIRE_FALSE(accepted->send("unread"));
            bool timed_out = false;
            client->recv(all_messages, 100ms, [&](Pipe&, RecvResult& r) {
                timed_out = r.status == RecvResult::Status::timeout;
            });
            run_until(
                loop, [&] { return timed_out; }, "recv timeout");
            CHECK(messages == 0);
            CHECK(client->stats().bytes_in == 0);
            // The pipe still sends.
            REQUIRE_FALSE(client->send("from a sock_only pipe"));
            run_until(
                loop, [&] { return accepted->queued() >= 1; }, "bytes from the sock_only pipe");
        }
    }
    SUBCASE("server: accepted pipes inherit it") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf raw;
            raw.sock_only = true;
            auto [server, client, accepted] = connect_pair(loop, f, raw);
            REQUIRE_FALSE(client->send("to the accepted socket"));
            std::string got;
            poll_until(
                loop,
                [&] {
                    char buf[64];
                    ssize_t n = ::recv(accepted->native_handle(), buf, sizeof buf, MSG_DONTWAIT);
                    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
                    return got.size() >= 22;
                },
                "bytes read from the accepted socket");
            CHECK(got == "to the accepted socket");
            CHECK(accepted->queued() == 0);
            CHECK(accepted->stats().msgs_in == 0);
        }
    }
    SUBCASE("UDP") {
        for (Family f : kFamilies) {
            CAPTURE(static_cast<int>(f));
            Loop loop;
            NetConf raw;
            raw.sock_only = true;
            auto u = must(Pipe::udp(loop, lo(f), {}, raw), "sock_only udp");
            int messages = 0;
            u->on_message([&](Pipe&, const Message&) { ++messages; });
            auto tx = must(Pipe::udp(loop, {}, u->local_address()), "sender");
            REQUIRE_FALSE(tx->send("datagram"));
            std::string got;
            sockaddr_storage from{};
            poll_until(
                loop,
                [&] {
                    char buf[64];
                    socklen_t flen = sizeof from;
                    ssize_t n = ::recvfrom(u->native_handle(), buf, sizeof buf, MSG_DONTWAIT,
                                           reinterpret_cast<sockaddr*>(&from), &flen);
                    if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
                    return n > 0;
                },
                "datagram read from the native socket");
            CHECK(got == "datagram");
            CHECK(Address::from_sockaddr(reinterpret_cast<sockaddr*>(&from)).port() ==
                  tx->local_address().port());
            run_for(loop, 30ms);
            CHECK(messages == 0);
            CHECK(u->stats().msgs_in == 0);
        }
    }
}

// ------------------------------------------------------------------------------ sock_proto

TEST_CASE("sock_proto: the protocol given to socket(); a wrong one is refused") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf tcp;
        tcp.sock_proto = IPPROTO_TCP;
        auto [server, client, accepted] = connect_pair(loop, f, tcp, tcp);
        CHECK(sockopt_int(client->native_handle(), SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
        CHECK(sockopt_int(server->native_handle(), SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
        REQUIRE_FALSE(client->send("proto"));
        run_until(
            loop, [&] { return accepted->queued() == 1; }, "bytes over IPPROTO_TCP");

        NetConf udp;
        udp.sock_proto = IPPROTO_UDP;
        auto a = must(Pipe::udp(loop, lo(f), {}, udp), "udp IPPROTO_UDP");
        CHECK(sockopt_int(a->native_handle(), SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDP);
        auto b = must(Pipe::udp(loop, {}, a->local_address(), udp), "udp IPPROTO_UDP sender");
        REQUIRE_FALSE(b->send("proto"));
        run_until(
            loop, [&] { return a->queued() == 1; }, "datagram over IPPROTO_UDP");

        // Swapped protocols are refused before any socket exists.
        auto wrong_tcp = Pipe::connect(loop, server->local_address(), udp);
        REQUIRE_FALSE(wrong_tcp);
        CHECK(wrong_tcp.error() == errc::invalid_config);
        CHECK(wrong_tcp.error().message.find("NetConf.sock_proto") != std::string::npos);
        auto wrong_listen = Pipe::listen(loop, lo(f), udp);
        REQUIRE_FALSE(wrong_listen);
        CHECK(wrong_listen.error().message.find("NetConf.sock_proto") != std::string::npos);
        auto wrong_udp = Pipe::udp(loop, lo(f), {}, tcp);
        REQUIRE_FALSE(wrong_udp);
        CHECK(wrong_udp.error().message.find("NetConf.sock_proto") != std::string::npos);
    }
}

// ------------------------------------------------------------------------------ reader_limit

TEST_CASE("reader_limit: no message is larger than one read of reader_limit bytes") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        const std::string payload = [] {
            std::string s(64 * 1024, '\0');
            for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>('a' + i % 26);
            return s;
        }();
        for (std::size_t limit : {std::size_t{512}, NetConf{}.reader_limit}) {
            CAPTURE(limit);
            NetConf c;
            c.reader_limit = limit;
            auto server = must(Pipe::listen(loop, lo(f), c), "listen");
            std::string got;
            std::size_t messages = 0, largest = 0;
            server->on_message([&](Pipe&, const Message& m) {
                got += m.data;
                ++messages;
                largest = std::max(largest, m.data.size());
            });
            auto client = must(Pipe::connect(loop, server->local_address()), "connect");
            REQUIRE_FALSE(client->send(payload));
            run_until(
                loop, [&] { return got.size() >= payload.size(); }, "64 KiB");
            CHECK(got == payload);
            CHECK(largest <= limit);
            if (limit == 512) {
                CHECK(largest == 512);
                CHECK(messages >= payload.size() / 512);
            } else {
                // With the default limit the same bytes come in far fewer, larger reads.
                CHECK(largest > 512);
                CHECK(messages < payload.size() / 512);
            }
        }
    }
}

// ------------------------------------------------------------------------------ queue bounds

namespace {

// Sends `n` datagrams "m<i>" padded with '.' to `size` bytes from a fresh sender to `rx`, and
// runs the loop until `rx` has read them all.
void send_datagrams(Loop& loop, const PipePtr& rx, int n, std::size_t size = 8) {
    auto tx = must(Pipe::udp(loop, {}, rx->local_address()), "sender");
    auto before = rx->stats().msgs_in;
    for (int i = 0; i < n; ++i) {
        std::string d = "m" + std::to_string(i);
        d.resize(std::max(size, d.size()), '.');
        REQUIRE_FALSE(tx->send(d));
    }
    run_until(
        loop, [&] { return rx->stats().msgs_in == before + static_cast<std::uint64_t>(n); },
        "datagrams");
    close_and_wait(loop, tx);
}

std::vector<std::string> drain(Pipe& p, SubId sub = all_messages) {
    std::vector<std::string> out;
    while (auto m = p.try_recv(sub)) out.push_back(m->data.substr(0, m->data.find('.')));
    return out;
}

}  // namespace

TEST_CASE("max_qsize: a full queue drops its oldest messages, counted in stats().dropped") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf c;
        c.max_qsize = 3;
        auto rx = must(Pipe::udp(loop, lo(f), {}, c), "receiver");
        send_datagrams(loop, rx, 10);
        CHECK(rx->queued() == 3);
        CHECK(rx->stats().dropped == 7);
        CHECK(drain(*rx) == std::vector<std::string>{"m7", "m8", "m9"});

        // Subscriptions are bounded the same way, each on its own.
        SubId sub = rx->subscribe(Pattern::contains("m"));
        send_datagrams(loop, rx, 5);
        CHECK(rx->queued(sub) == 3);
        CHECK(rx->queued() == 3);
        CHECK(rx->stats().dropped == 7 + 2 + 2);
        CHECK(drain(*rx, sub) == std::vector<std::string>{"m2", "m3", "m4"});

        // 0: unbounded.
        NetConf unbounded;
        unbounded.max_qsize = 0;
        auto all = must(Pipe::udp(loop, lo(f), {}, unbounded), "unbounded receiver");
        send_datagrams(loop, all, 50);
        CHECK(all->queued() == 50);
        CHECK(all->stats().dropped == 0);
    }
}

TEST_CASE("max_queue_bytes: a queue over its byte bound drops its oldest messages") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf c;
        c.max_queue_bytes = 2 * (100 + queue_entry_overhead) + 50;  // two 100-byte messages
        auto rx = must(Pipe::udp(loop, lo(f), {}, c), "receiver");
        send_datagrams(loop, rx, 10, 100);
        CHECK(rx->queued() == 2);
        CHECK(rx->stats().dropped == 8);
        CHECK(drain(*rx) == std::vector<std::string>{"m8", "m9"});

        // A message larger than the bound does not stay either.
        send_datagrams(loop, rx, 1, 600);
        CHECK(rx->queued() == 0);
        CHECK(rx->stats().dropped == 9);

        // Both bounds at once: whichever is reached first.
        NetConf both;
        both.max_queue_bytes = 2 * (400 + queue_entry_overhead) + 10;
        both.max_qsize = 4;
        auto rx2 = must(Pipe::udp(loop, lo(f), {}, both), "receiver with both bounds");
        send_datagrams(loop, rx2, 6, 100);  // 6 small messages: the count bounds it
        CHECK(rx2->queued() == 4);
        drain(*rx2);
        send_datagrams(loop, rx2, 3, 400);  // 3 large messages: the bytes bound it
        CHECK(rx2->queued() == 2);
        CHECK(rx2->stats().dropped == 2 + 1);

        NetConf unbounded;
        unbounded.max_queue_bytes = 0;
        auto all = must(Pipe::udp(loop, lo(f), {}, unbounded), "unbounded receiver");
        send_datagrams(loop, all, 40, 1000);
        CHECK(all->queued() == 40);
        CHECK(all->stats().dropped == 0);
    }
}

// ------------------------------------------------------------------------------ enable_msg_ids

TEST_CASE("enable_msg_ids / max_msg_ids: duplicate datagrams from one source arrive once") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf c;
        c.enable_msg_ids = true;
        c.max_msg_ids = 2;
        auto rx = must(Pipe::udp(loop, lo(f), {}, c), "receiver");
        std::vector<std::string> got;
        rx->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
        auto a = must(Pipe::udp(loop, {}, rx->local_address()), "source a");
        auto b = must(Pipe::udp(loop, {}, rx->local_address()), "source b");
        std::uint64_t sent = 0;
        // Sends one datagram and waits until the receiver has read it (delivered or dropped).
        auto send = [&](const PipePtr& from, const char* d) {
            REQUIRE_FALSE(from->send(d));
            ++sent;
            run_until(
                loop, [&] { return rx->stats().msgs_in == sent; }, "datagram read");
        };

        send(a, "same");
        send(a, "same");  // duplicate from the same source: dropped
        CHECK(got == std::vector<std::string>{"same"});
        CHECK(rx->stats().dropped == 1);

        send(b, "same");  // same bytes, another source: a different datagram
        CHECK(got == std::vector<std::string>{"same", "same"});

        got.clear();
        send(a, "one");
        send(a, "two");  // different payloads all arrive
        CHECK(got == std::vector<std::string>{"one", "two"});

        // Only max_msg_ids (2) identities are remembered: after two other datagrams from a,
        // its "same" is forgotten and passes again.
        got.clear();
        send(a, "same");
        CHECK(got == std::vector<std::string>{"same"});
        // ...and is remembered again.
        send(a, "same");
        CHECK(got == std::vector<std::string>{"same"});
        CHECK(rx->stats().dropped == 2);
    }
}

TEST_CASE("enable_msg_ids off: duplicates are delivered") {
    Loop loop;
    auto rx = must(Pipe::udp(loop, lo(Family::ipv4)), "receiver");
    int n = 0;
    rx->on_message([&](Pipe&, const Message& m) { n += m.data == "again"; });
    auto a = must(Pipe::udp(loop, {}, rx->local_address()), "source");
    for (int i = 0; i < 3; ++i) REQUIRE_FALSE(a->send("again"));
    run_until(
        loop, [&] { return n == 3; }, "three copies");
    CHECK(rx->stats().dropped == 0);
}

TEST_CASE("enable_msg_ids with a large max_msg_ids remembers every recent datagram") {
    Loop loop;
    NetConf c;
    c.enable_msg_ids = true;  // max_msg_ids: the default, 1000
    auto rx = must(Pipe::udp(loop, lo(Family::ipv4), {}, c), "receiver");
    send_datagrams(loop, rx, 20);
    send_datagrams(loop, rx, 20);  // a new source: nothing is a duplicate
    CHECK(rx->queued() == 40);
    auto tx = must(Pipe::udp(loop, {}, rx->local_address()), "one source");
    for (int round = 0; round < 3; ++round)
        for (int i = 0; i < 20; ++i) REQUIRE_FALSE(tx->send("d" + std::to_string(i)));
    run_until(
        loop, [&] { return rx->stats().msgs_in == 100; }, "datagrams");
    CHECK(rx->queued() == 60);
    CHECK(rx->stats().dropped == 40);
}

// ------------------------------------------------------------------------------ recv_timeout

TEST_CASE("recv_timeout: recv and accept without a timeout wait about that long") {
    for (auto ms_value : {milliseconds(150), milliseconds(400)}) {
        CAPTURE(ms_value.count());
        Loop loop;
        NetConf c;
        c.recv_timeout = ms_value;
        auto u = must(Pipe::udp(loop, lo(Family::ipv4), {}, c), "udp");
        bool done = false;
        RecvResult::Status status = RecvResult::Status::message;
        auto t0 = Clock::now();
        Clock::duration waited{};
        u->recv([&](Pipe&, RecvResult& r) {
            status = r.status;
            waited = Clock::now() - t0;
            done = true;
        });
        run_until(
            loop, [&] { return done; }, "recv timeout");
        CHECK(status == RecvResult::Status::timeout);
        CHECK(waited >= ms_value - 50ms);
        CHECK(waited < ms_value + 1000ms);

        auto server = must(Pipe::listen(loop, lo(Family::ipv4), c), "listen");
        done = false;
        t0 = Clock::now();
        server->accept(std::nullopt, [&](Pipe&, AcceptResult& r) {
            status = r.status;
            waited = Clock::now() - t0;
            done = true;
        });
        run_until(
            loop, [&] { return done; }, "accept timeout");
        CHECK(status == RecvResult::Status::timeout);
        CHECK(waited >= ms_value - 50ms);
        CHECK(waited < ms_value + 1000ms);

        // An explicit timeout still wins over the configured one.
        done = false;
        t0 = Clock::now();
        u->recv(all_messages, 10ms, [&](Pipe&, RecvResult& r) {
            status = r.status;
            waited = Clock::now() - t0;
            done = true;
        });
        run_until(
            loop, [&] { return done; }, "explicit timeout");
        CHECK(status == RecvResult::Status::timeout);
        CHECK(waited < ms_value);
    }
}

// ------------------------------------------------------------------------------- send_retry

namespace {

// A UDP echo that loses the first `lose` datagrams and counts what arrived.
struct LossyEcho {
    PipePtr pipe;
    int seen = 0;
};

std::shared_ptr<LossyEcho> lossy_echo(Loop& loop, Family f, int lose) {
    auto e = std::make_shared<LossyEcho>();
    e->pipe = must(Pipe::udp(loop, lo(f)), "echo");
    std::weak_ptr<LossyEcho> weak = e;
    e->pipe->on_message([weak, lose](Pipe& p, const Message& m) {
        auto self = weak.lock();
        if (!self || ++self->seen <= lose) return;
        REQUIRE(!p.send_to(m.data, m.from));
    });
    return e;
}

struct Outcome {
    bool done = false;
    int calls = 0;
    RecvResult result;
    Clock::duration waited{};
};

Pipe::RecvFn record(Outcome& o, Clock::time_point t0) {
    return [&o, t0](Pipe&, RecvResult& r) {
        ++o.calls;
        o.result = std::move(r);
        o.waited = Clock::now() - t0;
        o.done = true;
    };
}

}  // namespace

TEST_CASE("send_retry: send_recv resends a datagram after each reply timeout") {
    for (Family f : kFamilies) {
        const char* family = f == Family::ipv4 ? "IPv4" : "IPv6";
        CAPTURE(family);
        Loop loop;
        auto echo = lossy_echo(loop, f, 2);  // the first two requests are lost
        NetConf c;
        c.send_retry = 2;
        auto client = must(Pipe::udp(loop, lo(f), echo->pipe->local_address(), c), "client");
        Outcome o;
        REQUIRE(!client->send_recv("ping", all_messages, 100ms, record(o, Clock::now())));
        run_until(
            loop, [&] { return o.done; }, "reply");
        CHECK(o.calls == 1);
        REQUIRE(o.result.status == RecvResult::Status::message);
        CHECK(o.result.message.data == "ping");
        CHECK(o.result.message.from == echo->pipe->local_address());
        CHECK(echo->seen == 3);  // the first send and two resends
        CHECK(client->stats().msgs_out == 3);
        CHECK(o.waited >= 200ms - 20ms);  // two timeouts passed before the answered resend
        loop.run_until([] { return false; }, 150ms);
        CHECK(o.calls == 1);     // no later callback
        CHECK(echo->seen == 3);  // and no further resend
    }
}

TEST_CASE("send_retry: after the last resend the handler gets status timeout") {
    for (int retries : {0, 1, 3}) {
        CAPTURE(retries);
        Loop loop;
        auto echo = lossy_echo(loop, Family::ipv4, 1000);  // answers nothing
        NetConf c;
        c.send_retry = retries;
        c.recv_timeout = 60ms;  // the default wait of send_recv
        auto client =
            must(Pipe::udp(loop, lo(Family::ipv4), echo->pipe->local_address(), c), "client");
        Outcome o;
        REQUIRE(!client->send_recv("ping", all_messages, std::nullopt, record(o, Clock::now())));
        run_until(
            loop, [&] { return o.done; }, "timeout");
        CHECK(o.calls == 1);
        CHECK(o.result.status == RecvResult::Status::timeout);
        run_until(
            loop, [&] { return echo->seen == retries + 1; }, "every datagram arrived");
        CHECK(echo->seen == retries + 1);
        CHECK(o.waited >= (retries + 1) * 60ms - 20ms);
        loop.run_until([] { return false; }, 100ms);
        CHECK(echo->seen == retries + 1);
        CHECK(o.calls == 1);
    }
}

TEST_CASE("send_retry: the reply is the next message of the subscription; send_to form") {
    Loop loop;
    auto echo = lossy_echo(loop, Family::ipv6, 1);
    NetConf c;
    c.send_retry = 2;
    auto client = must(Pipe::udp(loop, lo(Family::ipv6), {}, c), "client without destination");
    // Only replies that start with "pong" count; the echo of "ping" would not.
    SubId pongs = client->subscribe(Pattern::prefix("pong"));
    Outcome o;
    REQUIRE(!client->send_recv("pong 7", pongs, 80ms, record(o, Clock::now()),
                               echo->pipe->local_address()));
    run_until(
        loop, [&] { return o.done; }, "reply");
    REQUIRE(o.result.status == RecvResult::Status::message);
    CHECK(o.result.message.data == "pong 7");
    CHECK(echo->seen == 2);

    // Without `to` and without a default destination nothing can be sent: an Error at once.
    Outcome none;
    Error e = client->send_recv("x", pongs, 50ms, record(none, Clock::now()));
    CHECK(e == errc::not_connected);
    // A subscription that does not exist: refused before anything is sent.
    auto before = client->stats().msgs_out;
    e = client->send_recv("x", 12345, 50ms, record(none, Clock::now()),
                          echo->pipe->local_address());
    CHECK(e == errc::invalid_config);
    CHECK(e.message.find("12345") != std::string::npos);
    CHECK(client->stats().msgs_out == before);
    loop.run_until([] { return false; }, 100ms);
    CHECK(none.calls == 0);
}

TEST_CASE("send_retry: a pipe that ends while waiting wakes the handler with status ended") {
    Loop loop;
    auto echo = lossy_echo(loop, Family::ipv4, 1000);
    NetConf c;
    c.send_retry = 5;
    auto client = must(Pipe::udp(loop, lo(Family::ipv4), echo->pipe->local_address(), c), "client");
    Outcome o;
    REQUIRE(!client->send_recv("ping", all_messages, 50ms, record(o, Clock::now())));
    loop.call_later(120ms, [&] { client->close(); });
    run_until(
        loop, [&] { return o.done; }, "ended");
    CHECK(o.calls == 1);
    CHECK(o.result.status == RecvResult::Status::ended);
    CHECK(o.result.end.reason == EndReason::local_close);
    CHECK(echo->seen >= 2);
    CHECK(echo->seen <= 4);
}

TEST_CASE("send_retry: TCP sends once and waits once, whatever send_retry says") {
    for (Family f : kFamilies) {
        const char* family = f == Family::ipv4 ? "IPv4" : "IPv6";
        CAPTURE(family);
        Loop loop;
        NetConf c;
        c.send_retry = 3;
        auto server = must(Pipe::listen(loop, lo(f)), "server");
        int requests = 0;
        bool answer = false;
        server->on_message([&](Pipe& p, const Message& m) {
            ++requests;
            if (answer) REQUIRE(!p.send(m.data));
        });
        auto client = must(Pipe::connect(loop, server->local_address(), c), "client");
        Outcome o;
        REQUIRE(!client->send_recv("ping", all_messages, 80ms, record(o, Clock::now())));
        run_until(
            loop, [&] { return o.done; }, "timeout");
        CHECK(o.result.status == RecvResult::Status::timeout);
        CHECK(o.waited < 80ms * 3);
        loop.run_until([] { return false; }, 100ms);
        CHECK(requests == 1);

        answer = true;
        Outcome o2;
        REQUIRE(!client->send_recv("pong", all_messages, 2000ms, record(o2, Clock::now())));
        run_until(
            loop, [&] { return o2.done; }, "reply");
        REQUIRE(o2.result.status == RecvResult::Status::message);
        CHECK(o2.result.message.data == "pong");
    }
}

// ------------------------------------------------------------------------------ dns_timeout

TEST_CASE("dns_timeout: a name resolves through the system resolver within it") {
    // "localhost" comes from /etc/hosts: no DNS server is asked. It may name 127.0.0.1 or ::1
    // first depending on the system, so a listener waits on the same port of both.
    Loop loop;
    PipePtr v4, v6;
    for (int attempt = 0; attempt < 20 && !v6; ++attempt) {
        v4 = must(Pipe::listen(loop, lo(Family::ipv4)), "listen on 127.0.0.1");
        auto r = Pipe::listen(loop, lo(Family::ipv6, v4->local_address().port()));
        if (r)
            v6 = r.value();
        else
            close_and_wait(loop, v4);
    }
    REQUIRE(v6);
    const std::uint16_t port = v4->local_address().port();
    NetConf c;
    c.dns_timeout = milliseconds(3000);
    auto client = must(Pipe::connect(loop, "localhost:" + std::to_string(port), c), "connect");
    CHECK(client->native_handle() == -1);  // while resolving there is no socket yet
    bool up = false;
    client->on_up([&](Pipe&) { up = true; });
    REQUIRE_FALSE(client->send("by name"));
    std::string got;
    for (auto& s : {v4, v6}) s->on_message([&](Pipe&, const Message& m) { got += m.data; });
    run_until(
        loop, [&] { return up && got == "by name"; }, "connection by name");
    CHECK(client->peer_address().is_loopback());
    CHECK(client->peer_address().port() == port);
}

TEST_CASE("dns_timeout: resolution that does not finish in time ends the pipe with timeout") {
    // The loop's resolver asks a DNS server on loopback that never answers (a UDP socket this
    // test opens and never reads), for a name no hosts file has.
    Loop loop;
    auto silent = must(Pipe::udp(loop, lo(Family::ipv4)), "silent DNS server");
    silent->pause();
    ResolverConf rc;
    rc.servers = {silent->local_address()};
    rc.hosts_file = false;
    REQUIRE(!Resolver::configure(loop, rc));
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    NetConf c;
    c.dns_timeout = milliseconds(200);
    auto t0 = Clock::now();
    auto client = must(
        Pipe::connect(loop, "nowhere.pw.test:" + std::to_string(server->local_address().port()), c),
        "connect");
    EndWatch end;
    end.watch(client);
    run_until(
        loop, [&] { return end.ended; }, "end by dns_timeout");
    auto waited = Clock::now() - t0;
    CAPTURE(end.info.error.message);
    CHECK(end.info.reason == EndReason::timeout);
    CHECK(end.info.error == errc::dns_timeout);
    CHECK(end.info.error.message.find("NetConf.dns_timeout") != std::string::npos);
    CHECK(end.info.error.message.find("nowhere.pw.test") != std::string::npos);
    CHECK(waited >= 200ms);
    CHECK(waited < 2000ms);
    run_for(loop, 50ms);
    CHECK(server->clients().empty());
    CHECK(end.info.reason == EndReason::timeout);
}

TEST_CASE("dns: an unknown name, and closing while the name is resolved") {
    Loop loop;
    auto silent = must(Pipe::udp(loop, lo(Family::ipv6)), "silent DNS server");
    silent->pause();
    ResolverConf rc;
    rc.servers = {silent->local_address()};
    rc.hosts_file = false;
    REQUIRE(!Resolver::configure(loop, rc));
    auto client = must(Pipe::connect(loop, "never.pw.test:80"), "connect");
    EndWatch end;
    end.watch(client);
    run_for(loop, 50ms);
    client->close();
    run_until(
        loop, [&] { return end.ended; }, "closed while resolving");
    CHECK(end.info.reason == EndReason::local_close);
    run_for(loop, 100ms);  // no late callback: the lookup was cancelled
}

// ------------------------------------------------------------------------------ max_accept_queue

TEST_CASE("max_accept_queue: with no accept callback, connections past the bound are closed") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf c;
        c.max_accept_queue = 2;
        auto server = must(Pipe::listen(loop, lo(f), c), "listen");
        std::vector<PipePtr> clients;
        std::vector<EndWatch> ends(3);
        for (int i = 0; i < 3; ++i) {
            clients.push_back(must(Pipe::connect(loop, server->local_address()), "connect"));
            ends[static_cast<std::size_t>(i)].watch(clients.back());
            // One at a time, so the server sees them in this order. The third may be closed
            // by the server before its own side is seen up, so for it wait for the drop.
            run_until(
                loop,
                [&] {
                    if (i == 2) return server->stats().dropped == 1;
                    return clients.back()->is_up() &&
                           server->clients().size() == static_cast<std::size_t>(i + 1);
                },
                "connection reaches the server");
        }
        run_until(
            loop, [&] { return ends[2].ended; }, "third connection closed by the server");
        CHECK((ends[2].info.reason == EndReason::peer_close ||
               ends[2].info.reason == EndReason::peer_reset));
        CHECK(server->stats().dropped == 1);
        run_for(loop, 50ms);
        CHECK_FALSE(ends[0].ended);
        CHECK_FALSE(ends[1].ended);
        // The two queued ones are there to accept, in order.
        auto a1 = server->try_accept();
        auto a2 = server->try_accept();
        REQUIRE(a1);
        REQUIRE(a2);
        CHECK(!server->try_accept());
        CHECK((*a1)->peer_address() == clients[0]->local_address());
        CHECK((*a2)->peer_address() == clients[1]->local_address());
        // Accepting made room again.
        auto late = must(Pipe::connect(loop, server->local_address()), "connect");
        EndWatch late_end;
        late_end.watch(late);
        run_until(
            loop, [&] { return late->is_up() && server->clients().size() == 3; }, "fourth");
        run_for(loop, 50ms);
        CHECK_FALSE(late_end.ended);
        CHECK(server->try_accept());
    }
}

TEST_CASE("max_accept_queue does not bound a server with an accept callback") {
    Loop loop;
    NetConf c;
    c.max_accept_queue = 1;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), c), "listen");
    std::vector<PipePtr> accepted;
    server->on_accept([&](Pipe&, const PipePtr& p) { accepted.push_back(p); });
    std::vector<PipePtr> clients;
    for (int i = 0; i < 4; ++i)
        clients.push_back(must(Pipe::connect(loop, server->local_address()), "connect"));
    run_until(
        loop, [&] { return accepted.size() == 4; }, "four accepted");
    run_for(loop, 30ms);
    for (auto& k : clients) CHECK(k->is_up());
    CHECK(server->stats().dropped == 0);
}

// ------------------------------------------------------------------------------ backlog

TEST_CASE(
    "backlog: passed to listen(); the kernel completes at most that many waiting "
    "connections") {
    // With the loop not running nothing is accepted, so connections wait in the kernel's accept
    // queue. Linux holds backlog + 1 there and drops the SYN of the next, which then stays in
    // progress (its retry comes a second later).
    for (int backlog : {1, 16, INT_MAX}) {
        CAPTURE(backlog);
        Loop loop;
        NetConf c;
        c.backlog = backlog;
        auto server = must(Pipe::listen(loop, lo(Family::ipv4), c), "listen");
        const Address at = server->local_address();
        std::vector<int> raws;
        int completed = 0;
        for (int i = 0; i < 3; ++i) {
            int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            REQUIRE(fd >= 0);
            raws.push_back(fd);
            int rc = ::connect(fd, at.sockaddr(), at.sockaddr_len());
            REQUIRE((rc == 0 || errno == EINPROGRESS));
            pollfd pfd{fd, POLLOUT, 0};
            if (::poll(&pfd, 1, 200) == 1 && sockopt_int(fd, SOL_SOCKET, SO_ERROR) == 0)
                ++completed;
        }
        if (backlog == 1) {
            CHECK(completed >= 1);
            CHECK(completed <= 2);  // Linux: exactly 2
        } else
            CHECK(completed == 3);
        // Once the loop runs, the server accepts what completed.
        run_until(
            loop, [&] { return server->clients().size() >= static_cast<std::size_t>(completed); },
            "accepted");
        for (int fd : raws) ::close(fd);
    }
}

TEST_CASE("max_accept_queue does not bound a server driven by message callbacks") {
    Loop loop;
    NetConf c;
    c.max_accept_queue = 1;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), c), "listen");
    server->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    std::vector<PipePtr> clients;
    std::string echoed;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(must(Pipe::connect(loop, server->local_address()), "connect"));
        clients.back()->on_message([&](Pipe&, const Message& m) { echoed += m.data; });
        CHECK(!clients.back()->send("x"));
    }
    run_until(
        loop, [&] { return echoed == "xxx"; }, "every connection echoes");
    CHECK(server->clients().size() == 3);
    CHECK_FALSE(server->try_accept());
    CHECK(server->stats().dropped == 0);
    for (auto& cl : clients) CHECK(cl->is_up());
}
