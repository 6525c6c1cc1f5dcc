// Helpers for the Pipe suites: connected TCP pairs, collectors of messages and ends, payloads,
// and raw sockets for the cases the library must face from outside (a listener that never
// accepts). Everything stays on loopback (127.0.0.1 and ::1) with ports chosen by the OS.
#pragma once

#include "support.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pw_test {

inline constexpr pipeworks::Family kFamilies[] = {pipeworks::Family::ipv4, pipeworks::Family::ipv6};

inline std::string family_name(pipeworks::Family f) {
    return f == pipeworks::Family::ipv4 ? "IPv4" : "IPv6";
}

// n bytes of a deterministic pseudo-random sequence: a lost, repeated or reordered chunk shows.
inline std::string payload(std::size_t n, std::uint32_t seed = 1) {
    std::string out(n, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& c : out) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c = static_cast<char>(x & 0xff);
    }
    return out;
}

// Everything a pipe's message callbacks saw.
struct Sink {
    std::string data;
    std::vector<std::string> msgs;
    std::vector<pipeworks::Address> from;
};

inline std::shared_ptr<Sink> collect(pipeworks::Pipe& p) {
    auto s = std::make_shared<Sink>();
    p.on_message([s](pipeworks::Pipe&, const pipeworks::Message& m) {
        s->data += m.data;
        s->msgs.emplace_back(m.data);
        s->from.push_back(m.from);
    });
    return s;
}

// How often, and why, a pipe ended.
struct Ends {
    int count = 0;
    pipeworks::EndInfo info;
    bool ended_flag_in_cb = false;  // Pipe::ended() as seen inside the end callback
};

inline std::shared_ptr<Ends> watch_end(pipeworks::Pipe& p) {
    auto e = std::make_shared<Ends>();
    p.on_end([e](pipeworks::Pipe& pipe, const pipeworks::EndInfo& info) {
        ++e->count;
        e->info = info;
        e->ended_flag_in_cb = pipe.ended();
    });
    return e;
}

// A listening server, a client connected to it, and the server's pipe for that client.
struct TcpPair {
    pipeworks::PipePtr server, client, accepted;
};

// Opens the pair and waits until the client is up and the server handed the connection over.
// The server has no accept callback, so the connection is taken with accept().
inline TcpPair tcp_pair(pipeworks::Loop& loop, pipeworks::Family f,
                        const pipeworks::NetConf& server_conf = {},
                        const pipeworks::NetConf& client_conf = {}) {
    using namespace pipeworks;
    TcpPair p;
    p.server = must(Pipe::listen(loop, lo(f), server_conf), "listen");
    p.client = must(Pipe::connect(loop, p.server->local_address(), client_conf), "connect");
    struct State {
        bool up = false, accepted = false;
        PipePtr pipe;
    };
    auto st = std::make_shared<State>();
    auto id = p.client->on_up([st](Pipe&) { st->up = true; });
    p.server->accept(kDeadline, [st](Pipe&, AcceptResult& r) {
        st->accepted = true;
        st->pipe = r.pipe;
    });
    run_until(
        loop, [&] { return st->up && st->accepted; }, "TCP pair up");
    p.client->remove(id);
    REQUIRE(st->pipe);
    p.accepted = st->pipe;
    return p;
}

// A raw socket, closed when it goes out of scope.
struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
    Fd& operator=(Fd&& o) noexcept {
        std::swap(fd, o.fd);
        return *this;
    }
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

// A free loopback TCP port: a listener is opened on port 0 and closed again, so a connect to
// the address it had is refused.
inline pipeworks::Address closed_tcp_port(pipeworks::Loop& loop, pipeworks::Family f) {
    using namespace pipeworks;
    auto l = must(Pipe::listen(loop, lo(f)), "listen for a free port");
    Address a = l->local_address();
    bool closed = false;
    l->close([&closed](Pipe&) { closed = true; });
    run_until(
        loop, [&] { return closed; }, "probe listener closed");
    return a;
}

// A loopback listener that cannot complete connections: listen(fd, 0) on a raw socket that is
// never accepted, with its accept queue filled by raw connects. Linux then drops further SYNs,
// so a new connect to `address` hangs until its own timeout.
struct BlackholeListener {
    Fd listener;
    std::vector<Fd> fillers;
    pipeworks::Address address;
    bool full = false;  // a filler connect hung: the accept queue is full
};

inline BlackholeListener blackhole_listener(pipeworks::Family f) {
    using namespace pipeworks;
    BlackholeListener b;
    int domain = f == Family::ipv6 ? AF_INET6 : AF_INET;
    b.listener = Fd(::socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(b.listener.fd >= 0);
    Address l = lo(f);
    REQUIRE(::bind(b.listener.fd, l.sockaddr(), l.sockaddr_len()) == 0);
    REQUIRE(::listen(b.listener.fd, 0) == 0);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    REQUIRE(::getsockname(b.listener.fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
    b.address = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
    for (int i = 0; i < 16 && !b.full; ++i) {
        Fd c(::socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        REQUIRE(c.fd >= 0);
        int rc = ::connect(c.fd, b.address.sockaddr(), b.address.sockaddr_len());
        if (rc != 0) {
            REQUIRE(errno == EINPROGRESS);
            pollfd pfd{c.fd, POLLOUT, 0};
            // A connect the listener takes completes in well under a millisecond on loopback.
            if (::poll(&pfd, 1, 300) == 0) b.full = true;
        }
        b.fillers.push_back(std::move(c));
    }
    return b;
}

}  // namespace pw_test
