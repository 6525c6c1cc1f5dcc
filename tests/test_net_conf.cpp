// NetConf validation: every constrained field, as seen through the calls that open pipes.
// A bad value must come back from connect / listen / udp / adopt as an Error naming the field,
// before any socket is made; the boundaries of every range must be accepted.
#include "support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

// The open calls a bad value is tried on.
enum Opens : unsigned {
    kConnect = 1,  // Pipe::connect to an address, and to "localhost:port" (resolving path)
    kListen = 2,   // Pipe::listen
    kUdp = 4,      // Pipe::udp
    kTcp = kConnect | kListen,
    kAll = kConnect | kListen | kUdp,
};

struct BadValue {
    const char* field;  // the field the error must name ("NetConf.<field>")
    const char* value;  // the bad value, for the test log
    std::function<void(NetConf&)> set;
    unsigned opens;
    errc code = errc::invalid_config;
};

const std::vector<BadValue>& bad_values() {
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    static const std::vector<BadValue> v = {
        {"ssl_handshake", "0 ms", [](NetConf& c) { c.ssl_handshake = milliseconds(0); }, kAll},
        {"ssl_handshake", "-1 ms", [](NetConf& c) { c.ssl_handshake = milliseconds(-1); }, kAll},
        {"use_ssl", "true on UDP", [](NetConf& c) { c.use_ssl = true; }, kUdp},
        {"tls.min_version", "0x0301",
         [](NetConf& c) {
             c.use_ssl = true;
             c.tls.min_version = 0x0301;
         },
         kTcp},
        {"tls.alpn", "an empty name",
         [](NetConf& c) {
             c.use_ssl = true;
             c.tls.alpn = {""};
         },
         kTcp},
        {"tls.key_file", "a certificate without its key",
         [](NetConf& c) {
             c.use_ssl = true;
             c.tls.cert_pem = "x";
         },
         kTcp},
        {"tls.cert_file", "both cert_file and cert_pem",
         [](NetConf& c) {
             c.use_ssl = true;
             c.tls.cert_file = "a";
             c.tls.cert_pem = "b";
             c.tls.key_pem = "k";
         },
         kTcp},
        {"dns_timeout", "0 ms", [](NetConf& c) { c.dns_timeout = milliseconds(0); }, kAll},
        {"dns_timeout", "-1 ms", [](NetConf& c) { c.dns_timeout = milliseconds(-1); }, kAll},
        {"recv_timeout", "-1 ms", [](NetConf& c) { c.recv_timeout = milliseconds(-1); }, kAll},
        {"con_timeout", "0 ms", [](NetConf& c) { c.con_timeout = milliseconds(0); }, kAll},
        {"con_timeout", "-5 ms", [](NetConf& c) { c.con_timeout = milliseconds(-5); }, kAll},
        {"sock_proto", "IPPROTO_UDP on TCP", [](NetConf& c) { c.sock_proto = IPPROTO_UDP; }, kTcp},
        {"sock_proto", "IPPROTO_TCP on UDP", [](NetConf& c) { c.sock_proto = IPPROTO_TCP; }, kUdp},
        {"sock_proto", "IPPROTO_SCTP", [](NetConf& c) { c.sock_proto = IPPROTO_SCTP; }, kAll},
        {"sock_proto", "-1", [](NetConf& c) { c.sock_proto = -1; }, kAll},
        {"enable_msg_ids", "true on TCP", [](NetConf& c) { c.enable_msg_ids = true; }, kTcp},
        {"max_msg_ids", "0 with enable_msg_ids",
         [](NetConf& c) {
             c.enable_msg_ids = true;
             c.max_msg_ids = 0;
         },
         kUdp},
        {"max_msg_ids", "10000001", [](NetConf& c) { c.max_msg_ids = 10'000'001; }, kAll},
        {"broadcast", "true on TCP", [](NetConf& c) { c.broadcast = true; }, kTcp},
        {"reader_limit", "0", [](NetConf& c) { c.reader_limit = 0; }, kAll},
        {"reader_limit", "511", [](NetConf& c) { c.reader_limit = 511; }, kAll},
        {"reader_limit", "16 MiB + 1", [](NetConf& c) { c.reader_limit = 16 * 1024 * 1024 + 1; },
         kAll},
        {"linger", "-1 s", [](NetConf& c) { c.linger = seconds(-1); }, kAll},
        {"linger", "1 s on UDP", [](NetConf& c) { c.linger = seconds(1); }, kUdp},
        {"linger", "0 s on UDP", [](NetConf& c) { c.linger = seconds(0); }, kUdp},
        {"send_retry", "-1", [](NetConf& c) { c.send_retry = -1; }, kAll},
        {"send_retry", "101", [](NetConf& c) { c.send_retry = 101; }, kAll},
        {"keepalive", "0 s", [](NetConf& c) { c.keepalive = seconds(0); }, kAll},
        {"keepalive", "-3 s", [](NetConf& c) { c.keepalive = seconds(-3); }, kAll},
        {"keepalive", "10 s on UDP", [](NetConf& c) { c.keepalive = seconds(10); }, kUdp},
        {"high_watermark", "0", [](NetConf& c) { c.high_watermark = 0; }, kAll},
        {"low_watermark", "above high_watermark",
         [](NetConf& c) { c.low_watermark = c.high_watermark + 1; }, kAll},
        {"max_write_queue", "below high_watermark",
         [](NetConf& c) { c.max_write_queue = c.high_watermark - 1; }, kAll},
        {"max_accept_queue", "0", [](NetConf& c) { c.max_accept_queue = 0; }, kAll},
        {"backlog", "0", [](NetConf& c) { c.backlog = 0; }, kAll},
        {"backlog", "-1", [](NetConf& c) { c.backlog = -1; }, kAll},
    };
    return v;
}

// Open file descriptors of this process: a refused open must not leave a socket behind.
int open_fds() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d)) ++n;
        ::closedir(d);
    }
    return n;
}

bool fd_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

// A raw socket in the state Pipe::adopt must recognise.
int raw_listener(Family f) {
    int fd = ::socket(f == Family::ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    Address a = lo(f);
    REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
    REQUIRE(::listen(fd, 8) == 0);
    return fd;
}

int raw_udp(Family f) {
    int fd = ::socket(f == Family::ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    Address a = lo(f);
    REQUIRE(::bind(fd, a.sockaddr(), a.sockaddr_len()) == 0);
    return fd;
}

int raw_connected(const Address& to) {
    int fd = ::socket(to.is_v6() ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, to.sockaddr(), to.sockaddr_len()) == 0);
    return fd;
}

bool names(const Error& e, const std::string& field) {
    return e.message.find("NetConf." + field) != std::string::npos;
}

void check_refused(const Result<PipePtr>& r, const BadValue& b, const char* call) {
    CAPTURE(std::string(call));
    REQUIRE_FALSE(r.ok());
    Error e = r.error();
    CAPTURE(e.message);
    CHECK(e.code == make_error_code(b.code));
    CHECK(names(e, b.field));
}

// Closes a pipe and runs the loop until it has ended.
void close_and_wait(Loop& loop, const PipePtr& p) {
    p->close();
    run_until(
        loop, [&] { return p->ended(); }, "pipe end");
}

}  // namespace

TEST_CASE("the default NetConf is valid for both transports") {
    NetConf c;
    CHECK_FALSE(c.validate(Transport::tcp));
    CHECK_FALSE(c.validate(Transport::udp));
    CHECK(c.validate(Transport::tcp).message.empty());
}

TEST_CASE("validate names the field of every bad value") {
    for (const auto& b : bad_values()) {
        CAPTURE(std::string(b.field));
        CAPTURE(std::string(b.value));
        NetConf c;
        b.set(c);
        for (Transport t : {Transport::tcp, Transport::udp}) {
            bool applies = t == Transport::tcp ? (b.opens & kTcp) != 0 : (b.opens & kUdp) != 0;
            CAPTURE(std::string(t == Transport::tcp ? "tcp" : "udp"));
            Error e = c.validate(t);
            if (applies) {
                CHECK(e.code == make_error_code(b.code));
                CHECK(names(e, b.field));
                // The message says what is wrong, not only where.
                CHECK(e.message.size() > std::string("NetConf.").size() + 4);
            }
        }
    }
}

TEST_CASE("connect, listen and udp refuse every bad value, naming the field") {
    Loop loop;
    auto target = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    const Address to = target->local_address();
    const std::string to_name = "localhost:" + std::to_string(to.port());
    int fds_before = open_fds();
    for (const auto& b : bad_values()) {
        CAPTURE(std::string(b.field));
        CAPTURE(std::string(b.value));
        NetConf c;
        b.set(c);
        NetConf with_loop = c;
        with_loop.loop = &loop;
        if (b.opens & kConnect) {
            check_refused(Pipe::connect(loop, to, c), b, "connect(loop, address)");
            check_refused(Pipe::connect(loop, to_name, c), b, "connect(loop, \"localhost:port\")");
            check_refused(Pipe::connect(loop, to.to_string(), c), b,
                          "connect(loop, \"127.0.0.1:port\")");
            check_refused(Pipe::connect(to, with_loop), b, "connect(address, conf)");
            for (Family f : {Family::ipv4, Family::ipv6})
                check_refused(Pipe::connect(loop, lo(f, to.port()), c, lo(f)), b,
                              "connect(loop, address, conf, local)");
        }
        if (b.opens & kListen) {
            for (Family f : {Family::ipv4, Family::ipv6})
                check_refused(Pipe::listen(loop, lo(f), c), b, "listen(loop, local)");
            check_refused(Pipe::listen(lo(Family::ipv4), with_loop), b, "listen(local, conf)");
        }
        if (b.opens & kUdp) {
            for (Family f : {Family::ipv4, Family::ipv6}) {
                check_refused(Pipe::udp(loop, lo(f), {}, c), b, "udp(loop, local)");
                check_refused(Pipe::udp(loop, {}, lo(f, to.port()), c), b, "udp(loop, {}, dest)");
            }
            check_refused(Pipe::udp(lo(Family::ipv4), {}, with_loop), b, "udp(local, dest, conf)");
        }
    }
    // Refused opens made no socket.
    CHECK(open_fds() == fds_before);
    // The loop has nothing of theirs to run either: the listener is all there is.
    run_for(loop, 20ms);
    CHECK(target->is_up());
    CHECK(target->clients().empty());
}

TEST_CASE("adopt refuses a bad value for the socket's transport and leaves the fd to the caller") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    for (const auto& b : bad_values()) {
        CAPTURE(std::string(b.field));
        CAPTURE(std::string(b.value));
        NetConf c;
        b.set(c);
        struct Case {
            unsigned opens;
            int fd;
            const char* what;
        };
        std::vector<Case> cases;
        if (b.opens & kListen) cases.push_back({kListen, raw_listener(Family::ipv4), "listener"});
        if (b.opens & kConnect)
            cases.push_back({kConnect, raw_connected(server->local_address()), "connected TCP"});
        if (b.opens & kUdp) cases.push_back({kUdp, raw_udp(Family::ipv4), "UDP"});
        for (auto& k : cases) {
            for (bool do_close : {true, false}) {
                CAPTURE(std::string(k.what));
                CAPTURE(do_close);
                NetConf cc = c;
                cc.do_close = do_close;
                check_refused(Pipe::adopt(loop, k.fd, cc), b, "adopt");
                CHECK(fd_open(k.fd));
            }
            ::close(k.fd);
        }
    }
    run_for(loop, 20ms);  // accepted connections of the raw clients come and go
}

TEST_CASE(
    "fields for the other transport are refused: linger/keepalive on UDP, "
    "broadcast/enable_msg_ids on TCP") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    NetConf linger;
    linger.linger = std::chrono::seconds(0);
    NetConf keepalive;
    keepalive.keepalive = std::chrono::seconds(30);
    NetConf broadcast;
    broadcast.broadcast = true;
    NetConf msg_ids;
    msg_ids.enable_msg_ids = true;

    for (auto* c : {&linger, &keepalive}) {
        const char* field = c == &linger ? "linger" : "keepalive";
        CAPTURE(std::string(field));
        auto u = Pipe::udp(loop, lo(Family::ipv4), {}, *c);
        REQUIRE_FALSE(u);
        CHECK(u.error() == errc::invalid_config);
        CHECK(names(u.error(), field));
        CHECK(u.error().message.find("TCP") != std::string::npos);
        // ...and accepted where they apply.
        auto l = Pipe::listen(loop, lo(Family::ipv4), *c);
        REQUIRE(l);
        auto k = Pipe::connect(loop, server->local_address(), *c);
        REQUIRE(k);
        run_until(
            loop, [&] { return k.value()->is_up(); }, "connect");
        close_and_wait(loop, k.value());
        close_and_wait(loop, l.value());
    }
    for (auto* c : {&broadcast, &msg_ids}) {
        const char* field = c == &broadcast ? "broadcast" : "enable_msg_ids";
        CAPTURE(std::string(field));
        auto k = Pipe::connect(loop, server->local_address(), *c);
        REQUIRE_FALSE(k);
        CHECK(k.error() == errc::invalid_config);
        CHECK(names(k.error(), field));
        CHECK(k.error().message.find("UDP") != std::string::npos);
        auto l = Pipe::listen(loop, lo(Family::ipv4), *c);
        REQUIRE_FALSE(l);
        CHECK(names(l.error(), field));
        auto u = Pipe::udp(loop, lo(Family::ipv4), {}, *c);
        REQUIRE(u);
        close_and_wait(loop, u.value());
    }
}

TEST_CASE("the limits of every range are accepted") {
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    struct Good {
        const char* what;
        std::function<void(NetConf&)> set;
        unsigned opens;
    };
    const std::vector<Good> goods = {
        {"recv_timeout 0", [](NetConf& c) { c.recv_timeout = milliseconds(0); }, kAll},
        {"dns_timeout 1 ms", [](NetConf& c) { c.dns_timeout = milliseconds(1); }, kAll},
        {"con_timeout 1 ms", [](NetConf& c) { c.con_timeout = milliseconds(1); }, kListen | kUdp},
        {"sock_proto IPPROTO_TCP", [](NetConf& c) { c.sock_proto = IPPROTO_TCP; }, kTcp},
        {"sock_proto IPPROTO_UDP", [](NetConf& c) { c.sock_proto = IPPROTO_UDP; }, kUdp},
        {"max_msg_ids 10000000", [](NetConf& c) { c.max_msg_ids = 10'000'000; }, kAll},
        {"max_msg_ids 0 without enable_msg_ids", [](NetConf& c) { c.max_msg_ids = 0; }, kAll},
        {"enable_msg_ids, max_msg_ids 1",
         [](NetConf& c) {
             c.enable_msg_ids = true;
             c.max_msg_ids = 1;
         },
         kUdp},
        {"reader_limit 512", [](NetConf& c) { c.reader_limit = 512; }, kAll},
        {"reader_limit 16 MiB", [](NetConf& c) { c.reader_limit = 16 * 1024 * 1024; }, kAll},
        {"linger 0 s", [](NetConf& c) { c.linger = seconds(0); }, kTcp},
        {"send_retry 0", [](NetConf& c) { c.send_retry = 0; }, kAll},
        {"send_retry 100", [](NetConf& c) { c.send_retry = 100; }, kAll},
        {"keepalive 1 s", [](NetConf& c) { c.keepalive = seconds(1); }, kTcp},
        {"high_watermark 1, low 0, max_write_queue 1",
         [](NetConf& c) {
             c.high_watermark = 1;
             c.low_watermark = 0;
             c.max_write_queue = 1;
         },
         kAll},
        {"low_watermark == high_watermark", [](NetConf& c) { c.low_watermark = c.high_watermark; },
         kAll},
        {"max_write_queue 0 (no cap)", [](NetConf& c) { c.max_write_queue = 0; }, kAll},
        {"max_write_queue == high_watermark",
         [](NetConf& c) { c.max_write_queue = c.high_watermark; }, kAll},
        {"max_queue_bytes 0, max_qsize 0",
         [](NetConf& c) {
             c.max_queue_bytes = 0;
             c.max_qsize = 0;
         },
         kAll},
        {"max_accept_queue 1", [](NetConf& c) { c.max_accept_queue = 1; }, kAll},
        {"backlog 1", [](NetConf& c) { c.backlog = 1; }, kAll},
        {"backlog INT_MAX", [](NetConf& c) { c.backlog = INT_MAX; }, kAll},
        {"ssl_handshake 10 s, use_ssl false",
         [](NetConf& c) {
             c.use_ssl = false;
             c.ssl_handshake = std::chrono::milliseconds(10'000);
         },
         kAll},
    };
    for (const auto& g : goods) {
        CAPTURE(std::string(g.what));
        NetConf c;
        g.set(c);
        Loop loop;
        if (g.opens & kTcp) CHECK_FALSE(c.validate(Transport::tcp));
        if (g.opens & kUdp) CHECK_FALSE(c.validate(Transport::udp));
        for (Family f : {Family::ipv4, Family::ipv6}) {
            CAPTURE(static_cast<int>(f));
            if (g.opens & kTcp) {
                auto s = Pipe::listen(loop, lo(f), c);
                REQUIRE_MESSAGE(s, s.error().message);
                if (g.opens & kConnect) {
                    auto k = Pipe::connect(loop, s.value()->local_address(), c);
                    REQUIRE_MESSAGE(k, k.error().message);
                    run_until(
                        loop, [&] { return k.value()->is_up(); }, "connect");
                    close_and_wait(loop, k.value());
                }
                close_and_wait(loop, s.value());
            }
            if (g.opens & kUdp) {
                auto u = Pipe::udp(loop, lo(f), {}, c);
                REQUIRE_MESSAGE(u, u.error().message);
                close_and_wait(loop, u.value());
            }
        }
    }
}

TEST_CASE("the first bad field is reported even when several are bad") {
    NetConf c;
    c.backlog = 0;
    c.reader_limit = 1;
    Error e = c.validate(Transport::tcp);
    REQUIRE(e);
    // One field per error, named exactly.
    bool one = names(e, "reader_limit") != names(e, "backlog");
    CHECK(one);
}

TEST_CASE("NetConf.loop naming another Loop is refused by every open call") {
    Loop loop;
    Loop other;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    NetConf c;
    c.loop = &other;
    auto check = [](const Result<PipePtr>& r, const char* call) {
        CAPTURE(std::string(call));
        REQUIRE_FALSE(r);
        CHECK(r.error() == errc::invalid_config);
        CHECK(names(r.error(), "loop"));
    };
    check(Pipe::connect(loop, server->local_address(), c), "connect");
    check(Pipe::connect(loop, "localhost:" + std::to_string(server->local_address().port()), c),
          "connect by name");
    check(Pipe::listen(loop, lo(Family::ipv4), c), "listen");
    check(Pipe::udp(loop, lo(Family::ipv4), {}, c), "udp");
    int fd = raw_udp(Family::ipv4);
    check(Pipe::adopt(loop, fd, c), "adopt");
    CHECK(fd_open(fd));
    ::close(fd);

    // The same Loop in conf.loop is fine, and a pipe's conf() always names its loop.
    NetConf same;
    same.loop = &loop;
    auto u = must(Pipe::udp(loop, lo(Family::ipv4), {}, same), "udp with conf.loop == loop");
    CHECK(&u->loop() == &loop);
    CHECK(u->conf().loop == &loop);
    auto v = must(Pipe::udp(loop, lo(Family::ipv4), {}, NetConf{}), "udp without conf.loop");
    CHECK(v->conf().loop == &loop);
    close_and_wait(loop, u);
    close_and_wait(loop, v);
}

TEST_CASE("the Loop-less overloads use conf.loop, and fail clearly without one") {
    Loop loop;
    auto target = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    NetConf none;
    REQUIRE(none.loop == nullptr);
    struct Call {
        const char* op;
        Result<PipePtr> r;
    };
    for (auto& c : {Call{"connect", Pipe::connect(target->local_address(), none)},
                    Call{"listen", Pipe::listen(lo(Family::ipv4), none)},
                    Call{"udp", Pipe::udp(lo(Family::ipv4), {}, none)}}) {
        CAPTURE(std::string(c.op));
        REQUIRE_FALSE(c.r);
        CHECK(c.r.error() == errc::invalid_config);
        CHECK(names(c.r.error(), "loop"));
        CHECK(c.r.error().message.find(c.op) != std::string::npos);
    }

    // With conf.loop set: a server, a client and a UDP pair, all on that loop, all working.
    NetConf conf;
    conf.loop = &loop;
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        auto server = must(Pipe::listen(lo(f), conf), "listen(local, conf)");
        CHECK(&server->loop() == &loop);
        server->on_message([](Pipe& p, const Message& m) { CHECK_FALSE(p.send(m.data)); });
        auto client = must(Pipe::connect(server->local_address(), conf), "connect(to, conf)");
        CHECK(&client->loop() == &loop);
        std::string got;
        client->on_message([&](Pipe&, const Message& m) { got += m.data; });
        REQUIRE_FALSE(client->send("over conf.loop"));
        run_until(
            loop, [&] { return got == "over conf.loop"; }, "tcp echo");

        auto a = must(Pipe::udp(lo(f), {}, conf), "udp(local, {}, conf)");
        auto b = must(Pipe::udp({}, a->local_address(), conf), "udp({}, dest, conf)");
        CHECK(&a->loop() == &loop);
        CHECK(&b->loop() == &loop);
        REQUIRE_FALSE(b->send("dgram"));
        bool done = false;
        a->recv([&](Pipe&, RecvResult& r) {
            REQUIRE(r);
            CHECK(r.message.data == "dgram");
            done = true;
        });
        run_until(
            loop, [&] { return done; }, "datagram");
        for (auto& p : {client, server, a, b}) close_and_wait(loop, p);
    }
}

TEST_CASE("opening a pipe from another thread while the loop runs is refused") {
    Loop loop;
    std::atomic<bool> running{false}, done{false};
    Result<PipePtr> r = Error{};
    std::thread t([&] {
        while (!running.load()) std::this_thread::sleep_for(1ms);
        r = Pipe::udp(loop, lo(Family::ipv4), {}, NetConf{});
        done = true;
    });
    loop.call_later(0ms, [&] { running = true; });
    // Wake up now and then: the other thread's answer is no loop event.
    auto until = std::chrono::steady_clock::now() + kDeadline;
    while (!done.load() && std::chrono::steady_clock::now() < until)
        loop.run_until([&] { return done.load(); }, 5ms);
    t.join();
    REQUIRE(done.load());
    REQUIRE_FALSE(r);
    CHECK(r.error() == errc::invalid_config);
    CHECK(r.error().message.find("thread") != std::string::npos);
}
