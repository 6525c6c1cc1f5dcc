// Pipe::adopt: sockets made outside pipeworks (raw socket/bind/listen/connect on loopback)
// taken over as pipes, who owns the fd afterwards, and destroying a Loop with pipes still open.
#include "support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

constexpr Family kFamilies[] = {Family::ipv4, Family::ipv6};

int domain_of(Family f) {
    return f == Family::ipv6 ? AF_INET6 : AF_INET;
}

bool fd_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

Address fd_address(int fd, bool peer = false) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    int rc = peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len);
    return rc == 0 ? Address::from_sockaddr(sa) : Address{};
}

int raw_listener(Family f) {
    int fd = ::socket(domain_of(f), SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    Address a = lo(f);
    REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    return fd;
}

// A blocking connect: on loopback the kernel completes it from the listener's backlog, before
// the server's loop has run.
int raw_connected(const Address& to) {
    int fd = ::socket(to.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, to.sockaddr(), to.sockaddr_len()) == 0);
    return fd;
}

int raw_udp(Family f, const Address& connect_to = {}) {
    int fd = ::socket(domain_of(f), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    Address a = lo(f);
    REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
    if (!connect_to.empty())
        REQUIRE(::connect(fd, connect_to.sockaddr(), connect_to.sockaddr_len()) == 0);
    return fd;
}

int open_fds() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d)) ++n;
        ::closedir(d);
    }
    return n;
}

PipePtr tcp_echo_server(Loop& loop, Family f) {
    auto s = must(Pipe::listen(loop, lo(f)), "listen");
    s->on_message([](Pipe& p, const Message& m) { CHECK_FALSE(p.send(m.data)); });
    return s;
}

PipePtr udp_echo_server(Loop& loop, Family f) {
    auto s = must(Pipe::udp(loop, lo(f)), "udp");
    s->on_message([](Pipe& p, const Message& m) { CHECK_FALSE(p.send_to(m.data, m.from)); });
    return s;
}

void close_and_wait(Loop& loop, const PipePtr& p) {
    p->close();
    run_until(
        loop, [&] { return p->ended(); }, "pipe end");
}

// Sends `text` on a TCP pipe and waits for it to come back.
void check_tcp_echo(Loop& loop, const PipePtr& p, const std::string& text) {
    std::string got;
    auto id = p->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE_FALSE(p->send(text));
    run_until(
        loop, [&] { return got.size() >= text.size(); }, "echo");
    CHECK(got == text);
    p->remove(id);
}

}  // namespace

// ------------------------------------------------------------------------------ kinds

TEST_CASE("adopt: a listening TCP socket becomes a server that accepts") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        int fd = raw_listener(f);
        const Address where = fd_address(fd);
        auto server = must(Pipe::adopt(loop, fd), "adopt listener");
        CHECK(server->kind() == PipeKind::tcp_server);
        CHECK(server->transport() == Transport::tcp);
        CHECK(server->is_up());
        CHECK(server->local_address() == where);
        CHECK(server->peer_address().empty());
        CHECK(server->native_handle() == fd);
        server->on_message([](Pipe& p, const Message& m) { CHECK_FALSE(p.send(m.data)); });
        std::vector<PipePtr> accepted;
        server->on_accept([&](Pipe&, const PipePtr& p) { accepted.push_back(p); });

        auto client = must(Pipe::connect(loop, where), "connect");
        check_tcp_echo(loop, client, "through an adopted listener");
        REQUIRE(accepted.size() == 1);
        CHECK(accepted[0]->kind() == PipeKind::tcp_accepted);
        CHECK(accepted[0]->peer_address() == client->local_address());

        // A raw client works as well.
        int raw = raw_connected(where);
        run_until(
            loop, [&] { return accepted.size() == 2; }, "second connection");
        CHECK(accepted[1]->peer_address() == fd_address(raw));
        ::close(raw);

        close_and_wait(loop, server);
        CHECK_FALSE(fd_open(fd));  // do_close (the default): the pipe closed it
    }
}

TEST_CASE("adopt: a connected TCP socket becomes a client that talks to a pipeworks server") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto server = tcp_echo_server(loop, f);
        int fd = raw_connected(server->local_address());
        const Address local = fd_address(fd);
        auto client = must(Pipe::adopt(loop, fd), "adopt connected socket");
        CHECK(client->kind() == PipeKind::tcp_client);
        CHECK(client->transport() == Transport::tcp);
        CHECK(client->peer_address() == server->local_address());
        CHECK(client->local_address() == local);
        CHECK(client->native_handle() == fd);
        int ups = 0;
        client->on_up([&](Pipe&) { ++ups; });  // added right after adopt: still sees up
        run_until(
            loop, [&] { return ups == 1; }, "up");
        CHECK(client->is_up());
        check_tcp_echo(loop, client, "hello from an adopted socket");
        check_tcp_echo(loop, client, std::string(100 * 1024, 'z'));
        REQUIRE(server->clients().size() == 1);
        CHECK(server->clients()[0]->peer_address() == local);

        // It ends like any client: the server closing shows as peer_close.
        EndReason reason = EndReason::error;
        bool ended = false;
        client->on_end([&](Pipe&, const EndInfo& e) {
            ended = true;
            reason = e.reason;
        });
        server->close();
        run_until(
            loop, [&] { return ended; }, "end");
        CHECK(reason == EndReason::peer_close);
        CHECK(ups == 1);
    }
}

TEST_CASE(
    "adopt: a UDP socket becomes a udp pipe; when connect()ed its peer is the "
    "destination") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto echo = udp_echo_server(loop, f);

        SUBCASE("unconnected") {
            int fd = raw_udp(f);
            auto u = must(Pipe::adopt(loop, fd), "adopt udp");
            CHECK(u->kind() == PipeKind::udp);
            CHECK(u->transport() == Transport::udp);
            CHECK(u->local_address() == fd_address(fd));
            CHECK(u->peer_address().empty());
            Error no_dest = u->send("x");
            CHECK(no_dest == errc::not_connected);
            REQUIRE_FALSE(u->send_to("to the echo", echo->local_address()));
            bool done = false;
            u->recv([&](Pipe&, RecvResult& r) {
                REQUIRE(r);
                CHECK(r.message.data == "to the echo");
                CHECK(r.message.from == echo->local_address());
                done = true;
            });
            run_until(
                loop, [&] { return done; }, "udp echo");
            close_and_wait(loop, u);
            CHECK_FALSE(fd_open(fd));
        }
        SUBCASE("connected") {
            int fd = raw_udp(f, echo->local_address());
            auto u = must(Pipe::adopt(loop, fd), "adopt connected udp");
            CHECK(u->kind() == PipeKind::udp);
            CHECK(u->peer_address() == echo->local_address());
            CHECK(u->local_address() == fd_address(fd));
            std::vector<std::string> got;
            u->on_message([&](Pipe&, const Message& m) {
                got.emplace_back(m.data);
                CHECK(m.from == echo->local_address());
            });
            REQUIRE_FALSE(u->send("via send()"));
            REQUIRE_FALSE(u->send_to("via send_to(peer)", echo->local_address()));
            run_until(
                loop, [&] { return got.size() == 2; }, "echoes");
            CHECK(got == std::vector<std::string>{"via send()", "via send_to(peer)"});
        }
    }
}

// ------------------------------------------------------------------------------ refusals

TEST_CASE("adopt refuses what it cannot take, and leaves the fd to the caller") {
    { Loop warm_up; }  // libuv's process-wide fds exist before counting
    const int fds_before = open_fds();
    {
        Loop loop;

        SUBCASE("-1") {
            auto r = Pipe::adopt(loop, -1);
            REQUIRE_FALSE(r);
            CHECK(r.error() == errc::invalid_config);
            CHECK(r.error().message.find("-1") != std::string::npos);
        }
        SUBCASE("an fd that is not open") {
            int fds[2];
            REQUIRE(::pipe(fds) == 0);
            ::close(fds[0]);
            ::close(fds[1]);
            auto r = Pipe::adopt(loop, fds[0]);
            REQUIRE_FALSE(r);
            CHECK(r.error().code == uv_error_code(UV_EBADF));
            CHECK(r.error().message.find("adopt") != std::string::npos);
        }
        SUBCASE("a pipe(2) fd") {
            int fds[2];
            REQUIRE(::pipe(fds) == 0);
            for (bool do_close : {true, false}) {
                CAPTURE(do_close);
                NetConf c;
                c.do_close = do_close;
                auto r = Pipe::adopt(loop, fds[0], c);
                REQUIRE_FALSE(r);
                CAPTURE(r.error().message);
                CHECK(r.error().code == uv_error_code(UV_ENOTSOCK));
                CHECK(r.error().message.find("adopt") != std::string::npos);
                CHECK(r.error().message.find("socket") != std::string::npos);
                CHECK(fd_open(fds[0]));
            }
            // Untouched: still a working pipe.
            REQUIRE(::write(fds[1], "p", 1) == 1);
            char ch = 0;
            CHECK(::read(fds[0], &ch, 1) == 1);
            CHECK(ch == 'p');
            ::close(fds[0]);
            ::close(fds[1]);
        }
        SUBCASE("a TCP socket neither listening nor connected") {
            for (Family f : kFamilies) {
                int fd = ::socket(domain_of(f), SOCK_STREAM | SOCK_CLOEXEC, 0);
                REQUIRE(fd >= 0);
                for (bool do_close : {true, false}) {
                    CAPTURE(do_close);
                    NetConf c;
                    c.do_close = do_close;
                    auto r = Pipe::adopt(loop, fd, c);
                    REQUIRE_FALSE(r);
                    CHECK(r.error() == errc::not_connected);
                    CHECK(fd_open(fd));
                }
                // Still the caller's, and usable: it can become a listener and be adopted then.
                Address a = lo(f);
                REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
                REQUIRE(::listen(fd, 4) == 0);
                auto s = must(Pipe::adopt(loop, fd), "adopt after listen()");
                CHECK(s->kind() == PipeKind::tcp_server);
                close_and_wait(loop, s);
            }
        }
        SUBCASE("a Unix-domain socket") {
            for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
                CAPTURE(type);
                int sv[2];
                REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
                auto r = Pipe::adopt(loop, sv[0]);
                REQUIRE_FALSE(r);
                CAPTURE(r.error().message);
                CHECK(r.error() == errc::wrong_pipe_kind);
                CHECK(r.error().message.find("IPv4 or IPv6") != std::string::npos);
                CHECK(fd_open(sv[0]));
                // Untouched: the pair still carries bytes.
                REQUIRE(::send(sv[1], "u", 1, 0) == 1);
                char ch = 0;
                CHECK(::recv(sv[0], &ch, 1, 0) == 1);
                ::close(sv[0]);
                ::close(sv[1]);
            }
        }
        SUBCASE("a socket already owned by a pipe on this loop") {
            auto u = must(Pipe::udp(loop, lo(Family::ipv4)), "udp");
            auto r = Pipe::adopt(loop, u->native_handle());
            REQUIRE_FALSE(r);
            CHECK(r.error().code == uv_error_code(UV_EEXIST));
            // The first pipe is unharmed.
            auto tx = must(Pipe::udp(loop, {}, u->local_address()), "sender");
            REQUIRE_FALSE(tx->send("still mine"));
            bool got = false;
            u->recv([&](Pipe&, RecvResult& m) { got = m && m.message.data == "still mine"; });
            run_until(
                loop, [&] { return got; }, "datagram");
            close_and_wait(loop, tx);
            close_and_wait(loop, u);
        }
        SUBCASE("a NetConf that does not fit the socket") {
            int fd = raw_udp(Family::ipv4);
            NetConf c;
            c.linger = std::chrono::seconds(0);  // TCP only
            auto r = Pipe::adopt(loop, fd, c);
            REQUIRE_FALSE(r);
            CHECK(r.error() == errc::invalid_config);
            CHECK(r.error().message.find("NetConf.linger") != std::string::npos);
            CHECK(fd_open(fd));
            // The same fd, adopted with a fitting conf.
            auto u = must(Pipe::adopt(loop, fd), "adopt after a refusal");
            CHECK(u->kind() == PipeKind::udp);
            close_and_wait(loop, u);
        }
        run_for(loop, 10ms);
    }  // the Loop is gone: whatever libuv reserved for it is released too
    CHECK(open_fds() == fds_before);
}

// ------------------------------------------------------------------------------ ownership

TEST_CASE("adopt with do_close=false: the caller's fd stays open after the pipe ends") {
    for (Family f : kFamilies) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        NetConf keep;
        keep.do_close = false;

        SUBCASE("connected TCP socket") {
            auto server = tcp_echo_server(loop, f);
            int fd = raw_connected(server->local_address());
            auto p = must(Pipe::adopt(loop, fd, keep), "adopt");
            CHECK(p->native_handle() == fd);
            check_tcp_echo(loop, p, "first owner");
            close_and_wait(loop, p);
            CHECK(fd_open(fd));
            CHECK(fd_address(fd, true) == server->local_address());
            run_for(loop, 30ms);
            REQUIRE(server->clients().size() == 1);  // the server saw no close
            // The connection goes on: adopted again, by a pipe that closes it this time.
            auto again = must(Pipe::adopt(loop, fd), "adopt again");
            check_tcp_echo(loop, again, "second owner");
            close_and_wait(loop, again);
            CHECK_FALSE(fd_open(fd));
            run_until(
                loop, [&] { return server->clients().empty(); }, "server sees the close");
        }
        SUBCASE("listening socket") {
            int fd = raw_listener(f);
            const Address where = fd_address(fd);
            auto p = must(Pipe::adopt(loop, fd, keep), "adopt");
            close_and_wait(loop, p);
            CHECK(fd_open(fd));
            CHECK(fd_address(fd) == where);
            // Still listening for its owner.
            int raw = raw_connected(where);
            int conn = ::accept(fd, nullptr, nullptr);
            CHECK(conn >= 0);
            if (conn >= 0) ::close(conn);
            ::close(raw);
            ::close(fd);
        }
        SUBCASE("UDP socket") {
            int fd = raw_udp(f);
            const Address where = fd_address(fd);
            auto p = must(Pipe::adopt(loop, fd, keep), "adopt");
            close_and_wait(loop, p);
            CHECK(fd_open(fd));
            CHECK(fd_address(fd) == where);
            auto tx = must(Pipe::udp(loop, {}, where), "sender");
            REQUIRE_FALSE(tx->send("for the owner"));
            char buf[32];
            ssize_t n = -1;
            auto until = std::chrono::steady_clock::now() + kDeadline;
            while (n <= 0 && std::chrono::steady_clock::now() < until) {
                loop.run_until([] { return false; }, 5ms);
                n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            }
            CHECK(n == 13);
            ::close(fd);
        }
    }
}

TEST_CASE("adopt leaves reuse_addr as the socket's owner set it") {
    Loop loop;
    for (int value : {0, 1}) {
        CAPTURE(value);
        int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, sizeof value) == 0);
        Address a = lo(Family::ipv4);
        REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
        auto u = must(Pipe::adopt(loop, fd), "adopt");
        int now = -1;
        socklen_t len = sizeof now;
        REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &now, &len) == 0);
        CHECK(now == value);
        close_and_wait(loop, u);
    }
}

// ------------------------------------------------------------------------------ Loop teardown

TEST_CASE("destroying a Loop with open pipes runs no callbacks and releases every socket") {
    { Loop warm_up; }  // libuv's process-wide fds (signal pipe) exist before counting
    const int fds_before = open_fds();
    int callbacks = 0;
    std::vector<PipePtr> kept;  // outlives the Loop: the pipes must still be safe to drop
    int kept_fd = -1;
    {
        Loop loop;
        auto count_all = [&](const PipePtr& p) {
            p->on_message([&](Pipe&, const Message&) { ++callbacks; });
            p->on_up([&](Pipe&) { ++callbacks; });
            p->on_end([&](Pipe&, const EndInfo&) { ++callbacks; });
            p->on_drain([&](Pipe&) { ++callbacks; });
        };
        // First everything that needs the loop to run: servers with accepted clients (one
        // left queued, one taken), over both families.
        struct Side {
            PipePtr server, taken;
            std::vector<PipePtr> clients;
        };
        std::vector<Side> sides;
        for (Family f : kFamilies) {
            Side s;
            s.server = must(Pipe::listen(loop, lo(f)), "listen");
            for (int i = 0; i < 2; ++i) {
                s.clients.push_back(
                    must(Pipe::connect(loop, s.server->local_address()), "connect"));
                run_until(
                    loop, [&] { return s.clients.back()->is_up(); }, "client up");
            }
            run_until(
                loop, [&] { return s.server->clients().size() == 2; }, "accepted");
            auto taken = s.server->try_accept();
            REQUIRE(taken);
            s.taken = *taken;
            sides.push_back(std::move(s));
        }
        // From here on the loop never runs again: every pending thing stays pending.
        for (auto& s : sides) {
            const Address at = s.server->local_address();
            s.server->on_end([&](Pipe&, const EndInfo&) { ++callbacks; });
            s.server->on_accept([&](Pipe&, const PipePtr&) { ++callbacks; });
            count_all(s.taken);
            CHECK_FALSE(s.taken->send("unsent"));
            for (auto& c : s.clients) {
                count_all(c);
                c->recv(all_messages, std::chrono::milliseconds(60000),
                        [&](Pipe&, RecvResult&) { ++callbacks; });
                CHECK_FALSE(c->send(std::string(4096, 'q')));
            }
            if (at.is_v6()) {
                // Here the queue is emptied, so an accept() waits (over IPv4 one stays queued).
                auto second = s.server->try_accept();
                REQUIRE(second);
                count_all(*second);
                kept.push_back(*second);
                s.server->accept(std::chrono::milliseconds(60000),
                                 [&](Pipe&, AcceptResult&) { ++callbacks; });
            }
            // A client still connecting, one closing, and one resolving a name.
            auto connecting = must(Pipe::connect(loop, at), "connect");
            count_all(connecting);
            auto closing = must(Pipe::connect(loop, at), "connect");
            count_all(closing);
            closing->close([&](Pipe&) { ++callbacks; });
            if (at.is_v4()) {
                auto resolving =
                    must(Pipe::connect(loop, "localhost:" + std::to_string(at.port())), "by name");
                count_all(resolving);
                kept.push_back(resolving);
            }
            // UDP, with a datagram waiting and a recv waiting.
            auto u = must(Pipe::udp(loop, at.with_port(0)), "udp");
            auto tx = must(Pipe::udp(loop, {}, u->local_address()), "udp sender");
            CHECK_FALSE(tx->send("unread"));
            count_all(u);
            count_all(tx);
            u->recv(all_messages, std::chrono::milliseconds(60000),
                    [&](Pipe&, RecvResult&) { ++callbacks; });
            u->subscribe(Pattern::any(), {}, [&](Pipe&, const Message&) { ++callbacks; });
            kept.insert(kept.end(), {s.server, s.taken, connecting, closing, u, tx});
            kept.insert(kept.end(), s.clients.begin(), s.clients.end());
        }
        loop.call_later(std::chrono::milliseconds(0), [&] { ++callbacks; });
        // An adopted socket the caller keeps.
        NetConf keep;
        keep.do_close = false;
        kept_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(kept_fd >= 0);
        Address a = lo(Family::ipv4);
        REQUIRE(::bind(kept_fd, a.sockaddr(), a.sockaddr_len()) == 0);
        auto adopted = must(Pipe::adopt(loop, kept_fd, keep), "adopt");
        count_all(adopted);
        kept.push_back(adopted);
        CHECK(callbacks == 0);
    }
    CHECK(callbacks == 0);
    for (auto& p : kept) CHECK(p->ended());
    CHECK(fd_open(kept_fd));
    ::close(kept_fd);
    kept.clear();
    CHECK(open_fds() == fds_before);
}
