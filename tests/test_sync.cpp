// The blocking facade (pipeworks::sync) from plain threads against pipeworks servers that run on
// loops of their own threads: every call with its timeouts and errors, refusal on a loop
// thread, 8 threads at once, the private thread's start and stop, packet requests; v4 and v6.
#include "pipe_support.hpp"

#include "platform/loop_core.hpp"

#include <pipeworks/sync.hpp>

#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using Clock = std::chrono::steady_clock;

namespace {

// A pipeworks Loop on a thread of its own, with what setup() opened on it before the thread
// started. stop() closes what close() names on the loop and joins.
class LoopThread {
public:
    explicit LoopThread(const std::function<void(Loop&)>& setup) {
        setup(loop_);
        thread_ = std::thread(
            [this] { loop_.run_until([this] { return stop_.load(); }, std::chrono::seconds(60)); });
    }
    ~LoopThread() { stop(); }
    LoopThread(const LoopThread&) = delete;
    LoopThread& operator=(const LoopThread&) = delete;

    // Runs fn on the loop thread (between stop requests).
    void post(std::function<void()> fn) { loop_.post(std::move(fn)); }
    void stop() {
        if (!thread_.joinable()) return;
        loop_.post([this] { stop_ = true; });
        thread_.join();
    }

private:
    Loop loop_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// A framed (4-byte length) TCP echo server on its own loop thread.
struct EchoServer {
    PipePtr server;
    Address address;
    LoopThread thread;
    explicit EchoServer(Family f, NetConf conf = framed())
        : thread([&](Loop& loop) {
              server = must(Pipe::listen(loop, lo(f), conf), "listen");
              server->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });
              address = server->local_address();
          }) {}
    ~EchoServer() {
        thread.post([this] {
            server->close();
            server.reset();  // on the loop's thread, while the loop is there
        });
        thread.stop();
    }
    static NetConf framed() {
        NetConf c;
        c.framer = Framer::message();
        return c;
    }
};

NetConf framed() {
    return EchoServer::framed();
}

template <class F>
std::chrono::milliseconds elapsed(F&& f) {
    auto t0 = Clock::now();
    f();
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

}  // namespace

TEST_CASE("connect, send, recv and close against a pipeworks echo server") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        EchoServer echo(f);
        auto pipe = must(sync::Pipe::connect(echo.address, framed()), "sync connect");
        CHECK(pipe.peer_address() == echo.address);
        CHECK(pipe.local_address().family() == f);
        for (int i = 0; i < 10; ++i) {
            std::string msg = "message " + std::to_string(i);
            REQUIRE_FALSE(pipe.send(msg));
            RecvResult r = pipe.recv(kDeadline);
            REQUIRE(r.status == RecvResult::Status::message);
            CHECK(r.message.data == msg);
            CHECK(r.message.from == echo.address);
        }
        auto end = must(pipe.close(), "close");
        CHECK(end.reason == EndReason::local_close);
        CHECK_FALSE(end.error);
        CHECK(end.unsent_bytes == 0);
        // Closed: a second close says the same, send and recv say it ended.
        CHECK(must(pipe.close(), "close again").reason == EndReason::local_close);
        CHECK(pipe.send("late") == errc::pipe_ended);
        CHECK(pipe.recv(kDeadline).status == RecvResult::Status::ended);
    }
}

TEST_CASE("send_recv: a request and its reply in one call; a refused send says why") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        EchoServer echo(f);
        auto pipe = must(sync::Pipe::connect(echo.address, framed()), "connect");
        for (int i = 0; i < 20; ++i) {
            std::string msg = payload(100 + static_cast<std::size_t>(i), static_cast<unsigned>(i));
            auto r = must(pipe.send_recv(msg, kDeadline), "send_recv");
            REQUIRE(r.status == RecvResult::Status::message);
            CHECK(r.message.data == msg);
        }
        // A message the framer cannot carry is refused before anything waits.
        NetConf small = framed();
        small.framer.max_message = 16;
        auto limited = must(sync::Pipe::connect(echo.address, small), "connect limited");
        auto refused = limited.send_recv(std::string(17, 'x'), kDeadline);
        REQUIRE_FALSE(refused);
        CHECK(refused.error() == errc::message_too_large);
        REQUIRE_FALSE(pipe.close().error());
        auto ended = pipe.send_recv("late", kDeadline);
        REQUIRE_FALSE(ended);
        CHECK(ended.error() == errc::pipe_ended);
    }
}

TEST_CASE("connect by host:port, v4 and v6 literals") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        EchoServer echo(f);
        auto pipe = must(sync::Pipe::connect(echo.address.to_string(), framed()), "by name");
        REQUIRE_FALSE(pipe.send("by text"));
        RecvResult r = pipe.recv(kDeadline);
        REQUIRE(r.status == RecvResult::Status::message);
        CHECK(r.message.data == "by text");
    }
}

TEST_CASE("connect errors: refused, a bad conf, a bad address text, connect timeout") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Address dead;
        {
            Loop loop;
            dead = closed_tcp_port(loop, f);
        }
        auto refused = sync::Pipe::connect(dead);
        REQUIRE_FALSE(refused);
        CHECK(refused.error().code == std::error_code(UV_ECONNREFUSED, uv_category()));
        CHECK(mentions(refused.error(), dead.to_string()));

        NetConf bad;
        bad.close_timeout = 0ms;
        auto invalid = sync::Pipe::connect(lo(f, 9), bad);
        REQUIRE_FALSE(invalid);
        CHECK(invalid.error() == errc::invalid_config);
        CHECK(mentions(invalid.error(), "close_timeout"));

        // The facade's own timeout, shorter than con_timeout: the attempt is closed.
        BlackholeListener hole = blackhole_listener(f);
        if (hole.full) {
            std::optional<Result<sync::Pipe>> r;
            auto took = elapsed([&] { r.emplace(sync::Pipe::connect(hole.address, {}, 200ms)); });
            REQUIRE_FALSE(*r);
            CHECK(r->error() == errc::sync_timeout);
            CHECK(took >= 200ms);
            CHECK(took < 2000ms);
            // con_timeout shorter than the facade's: the pipe's own connect_timeout.
            NetConf quick;
            quick.con_timeout = 150ms;
            auto t = sync::Pipe::connect(hole.address, quick, 3000ms);
            REQUIRE_FALSE(t);
            CHECK(t.error() == errc::connect_timeout);
        }
    }
    auto text = sync::Pipe::connect(std::string_view("127.0.0.1:notaport"));
    REQUIRE_FALSE(text);
    CHECK(text.error() == errc::invalid_address);
}

TEST_CASE("recv: timeout, then the message that came later; nothing lost between calls") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        EchoServer echo(f);
        auto pipe = must(sync::Pipe::connect(echo.address, framed()), "connect");
        RecvResult none;
        auto took = elapsed([&] { none = pipe.recv(100ms); });
        CHECK(none.status == RecvResult::Status::timeout);
        CHECK(took >= 100ms);
        CHECK(took < 2000ms);
        // Messages that arrive while nobody waits are queued by the pipe.
        for (int i = 0; i < 50; ++i) REQUIRE_FALSE(pipe.send("m" + std::to_string(i)));
        std::this_thread::sleep_for(50ms);
        for (int i = 0; i < 50; ++i) {
            RecvResult r = pipe.recv(kDeadline);
            REQUIRE(r.status == RecvResult::Status::message);
            CHECK(r.message.data == "m" + std::to_string(i));
        }
    }
}

TEST_CASE("a peer that sends more than the queue holds: reading pauses, nothing is dropped") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        const std::string data = payload(4 * 1024 * 1024, 7);
        // The accepted side sends 4 MiB in 16 KiB messages at once; the client waits first.
        auto server = must(sync::Server::listen(lo(f), framed()), "listen");
        NetConf small = framed();
        small.max_queue_bytes = 64 * 1024;  // far below what comes
        auto client = must(sync::Pipe::connect(server.local_address(), small), "connect");
        auto accepted = must(server.accept(kDeadline), "accept");
        // Assertions stay on the test's thread: a sender counts its failures.
        std::atomic<int> send_errors{0};
        std::thread sender([&] {
            for (std::size_t off = 0; off < data.size(); off += 16384)
                if (accepted.send(std::string_view(data).substr(off, 16384))) ++send_errors;
        });
        std::this_thread::sleep_for(300ms);  // the client's queue fills and reading pauses
        std::string got;
        while (got.size() < data.size()) {
            RecvResult r = client.recv(kDeadline);
            REQUIRE(r.status == RecvResult::Status::message);
            got += r.message.data;
        }
        sender.join();
        CHECK(send_errors == 0);
        CHECK(got.size() == data.size());
        CHECK(got == data);
    }
}

TEST_CASE("listen, accept with a timeout, both directions, shutdown and the peer's FIN") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        auto server = must(sync::Server::listen(lo(f)), "listen");
        CHECK(server.local_address().port() != 0);
        std::optional<Result<sync::Pipe>> none;
        auto took = elapsed([&] { none.emplace(server.accept(100ms)); });
        REQUIRE_FALSE(*none);
        CHECK(none->error() == errc::sync_timeout);
        CHECK(took >= 100ms);

        auto client = must(sync::Pipe::connect(server.local_address()), "connect");
        auto peer = must(server.accept(kDeadline), "accept");
        CHECK(peer.peer_address() == client.local_address());
        REQUIRE_FALSE(client.send("ping"));
        RecvResult r = peer.recv(kDeadline);
        REQUIRE(r.status == RecvResult::Status::message);
        CHECK(r.message.data == "ping");

        // A half-close: the peer reads to the end, then answers, then finishes too.
        REQUIRE_FALSE(client.shutdown());
        CHECK(client.send("after shutdown"));
        CHECK(peer.recv(kDeadline).status == RecvResult::Status::finished);
        REQUIRE_FALSE(peer.send("pong"));
        RecvResult back = client.recv(kDeadline);
        REQUIRE(back.status == RecvResult::Status::message);
        CHECK(back.message.data == "pong");
        REQUIRE_FALSE(peer.shutdown());
        RecvResult last = client.recv(kDeadline);
        CHECK((last.status == RecvResult::Status::finished ||
               last.status == RecvResult::Status::ended));
        CHECK(must(client.close(), "close client").unsent_bytes == 0);
        CHECK(must(peer.close(), "close peer").unsent_bytes == 0);

        REQUIRE_FALSE(server.close());
        auto after = server.accept(100ms);
        REQUIRE_FALSE(after);
        CHECK(after.error() == errc::pipe_ended);
    }
}

TEST_CASE("listen errors: an address in use, a bad conf") {
    auto first = must(sync::Server::listen(lo(Family::ipv4)), "listen");
    auto again = sync::Server::listen(first.local_address());
    REQUIRE_FALSE(again);
    CHECK(again.error().code == std::error_code(UV_EADDRINUSE, uv_category()));
    NetConf bad;
    bad.backlog = 0;
    auto invalid = sync::Server::listen(lo(Family::ipv6), bad);
    REQUIRE_FALSE(invalid);
    CHECK(invalid.error() == errc::invalid_config);
}

TEST_CASE("send waits while the write queue is full and times out with nothing queued") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        auto server = must(sync::Server::listen(lo(f)), "listen");
        NetConf conf;
        conf.high_watermark = 64 * 1024;
        conf.low_watermark = 16 * 1024;
        auto client = must(sync::Pipe::connect(server.local_address(), conf), "connect");
        auto peer = must(server.accept(kDeadline), "accept");  // never reads (until later)
        const std::string chunk(256 * 1024, 'x');
        Error e;
        std::size_t sent = 0;
        for (int i = 0; i < 200 && !e; ++i) {
            e = client.send(chunk, 300ms);
            if (!e) sent += chunk.size();
        }
        REQUIRE(e);
        CHECK(e == errc::sync_timeout);
        CHECK(mentions(e, "nothing sent"));
        // The peer reads everything that was accepted, and not one byte more.
        std::size_t got = 0;
        while (got < sent) {
            RecvResult r = peer.recv(kDeadline);
            REQUIRE(r.status == RecvResult::Status::message);
            got += r.message.data.size();
        }
        CHECK(got == sent);
        CHECK(peer.recv(200ms).status == RecvResult::Status::timeout);
    }
}

TEST_CASE("empty pipes, servers and connections refuse every call") {
    sync::Pipe p;
    CHECK_FALSE(p);
    CHECK(p.send("x") == errc::pipe_ended);
    CHECK(p.recv(10ms).status == RecvResult::Status::ended);
    CHECK(p.shutdown() == errc::pipe_ended);
    CHECK(p.close().error() == errc::pipe_ended);
    sync::Server s;
    CHECK(s.accept(10ms).error() == errc::pipe_ended);
    sync::PacketConnection c;
    CHECK(c.request(0, "x").error == errc::pipe_ended);
}

TEST_CASE("a blocking call on a loop thread is refused at once, not a deadlock") {
    EchoServer echo(Family::ipv4);
    auto pipe = must(sync::Pipe::connect(echo.address, framed()), "connect");
    auto server = must(sync::Server::listen(lo(Family::ipv6)), "listen");
    Loop loop;
    std::vector<Error> errors;
    RecvResult recv_result;
    bool ran = false;
    auto took = std::chrono::milliseconds(0);
    loop.call_later(0ms, [&] {
        took = elapsed([&] {
            errors.push_back(sync::Pipe::connect(echo.address).error());
            errors.push_back(sync::Pipe::connect(std::string_view("127.0.0.1:1")).error());
            errors.push_back(sync::Server::listen(lo(Family::ipv4)).error());
            errors.push_back(sync::PacketConnection::connect(echo.address).error());
            errors.push_back(pipe.send("x"));
            errors.push_back(pipe.shutdown());
            errors.push_back(pipe.close().error());
            errors.push_back(server.accept(5s).error());
            errors.push_back(server.close());
            errors.push_back(pipe.send_recv("x", 5s).error());
            recv_result = pipe.recv(5s);
        });
        ran = true;
    });
    run_until(
        loop, [&] { return ran; }, "callback");
    CHECK(took < 1000ms);
    for (const Error& e : errors) {
        CAPTURE(e.message);
        CHECK(e == errc::blocking_on_loop_thread);
        CHECK(mentions(e, "sync::"));
    }
    CHECK(recv_result.status == RecvResult::Status::ended);
    CHECK(recv_result.end.error == errc::blocking_on_loop_thread);
    // Off the loop thread the same objects work.
    REQUIRE_FALSE(pipe.send("still fine"));
    RecvResult r = pipe.recv(kDeadline);
    REQUIRE(r.status == RecvResult::Status::message);
    CHECK(r.message.data == "still fine");
}

TEST_CASE("the loop-thread marker: set inside any Loop's run, cleared after") {
    CHECK_FALSE(detail::running_a_loop());
    Loop a, b;
    bool inner = false, outer = false, after_inner = false;
    a.call_later(0ms, [&] {
        outer = detail::running_a_loop();
        b.call_later(0ms, [&] { inner = detail::running_a_loop(); });
        b.run();
        after_inner = detail::running_a_loop();  // still inside a's run
    });
    a.run();
    CHECK(outer);
    CHECK(inner);
    CHECK(after_inner);
    CHECK_FALSE(detail::running_a_loop());
    bool other_thread = true;
    std::thread([&] { other_thread = detail::running_a_loop(); }).join();
    CHECK_FALSE(other_thread);
}

TEST_CASE("8 threads at once, each with its own blocking pipe, against one pipeworks server") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        EchoServer echo(f);
        constexpr int kThreads = 8, kRounds = 200;
        std::atomic<int> good{0}, bad{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&, t] {
                auto pipe = sync::Pipe::connect(echo.address, framed());
                if (!pipe) {
                    ++bad;
                    return;
                }
                for (int i = 0; i < kRounds; ++i) {
                    std::string msg = payload(64 + static_cast<std::size_t>(i % 32),
                                              static_cast<std::uint32_t>(t * 1000 + i));
                    if (pipe->send(msg)) {
                        ++bad;
                        return;
                    }
                    RecvResult r = pipe->recv(kDeadline);
                    if (r.status != RecvResult::Status::message || r.message.data != msg) {
                        ++bad;
                        return;
                    }
                    ++good;
                }
                auto end = pipe->close();
                if (!end || end->unsent_bytes != 0) ++bad;
            });
        }
        for (auto& th : threads) th.join();
        CHECK(bad == 0);
        CHECK(good == kThreads * kRounds);
    }
}

TEST_CASE("one blocking pipe shared by several threads: each call blocks only its caller") {
    EchoServer echo(Family::ipv6);
    auto pipe = must(sync::Pipe::connect(echo.address, framed()), "connect");
    std::atomic<int> received{0};
    std::thread reader([&] {
        for (int i = 0; i < 400; ++i)
            if (pipe.recv(kDeadline).status == RecvResult::Status::message) ++received;
    });
    std::vector<std::thread> writers;
    std::atomic<int> send_errors{0};
    for (int w = 0; w < 4; ++w)
        writers.emplace_back([&] {
            for (int i = 0; i < 100; ++i)
                if (pipe.send("from a writer")) ++send_errors;
        });
    for (auto& th : writers) th.join();
    reader.join();
    CHECK(send_errors == 0);
    CHECK(received == 400);
}

TEST_CASE("the private thread stops when the last sync object goes, and starts on next use") {
    CHECK_FALSE(sync::running());
    EchoServer echo(Family::ipv4);
    {
        auto a = must(sync::Pipe::connect(echo.address, framed()), "a");
        CHECK(sync::running());
        { auto b = must(sync::Pipe::connect(echo.address, framed()), "b"); }
        CHECK(sync::running());  // a is still alive
        REQUIRE_FALSE(a.send("a"));
        CHECK(a.recv(kDeadline).status == RecvResult::Status::message);
        // Moved: still one user.
        sync::Pipe moved = std::move(a);
        CHECK_FALSE(a);
        CHECK(sync::running());
    }
    CHECK_FALSE(sync::running());
    {
        auto c = must(sync::Pipe::connect(echo.address, framed()), "c");
        CHECK(sync::running());
        REQUIRE_FALSE(c.send("again"));
        RecvResult r = c.recv(kDeadline);
        REQUIRE(r.status == RecvResult::Status::message);
        CHECK(r.message.data == "again");
    }
    CHECK_FALSE(sync::running());
    // A failed open leaves nothing running.
    Address dead;
    {
        Loop loop;
        dead = closed_tcp_port(loop, Family::ipv4);
    }
    CHECK_FALSE(sync::Pipe::connect(dead));
    CHECK_FALSE(sync::running());
}

TEST_CASE("a destructor never blocks forever: unsent bytes to a peer that never reads") {
    auto took = elapsed([&] {
        auto server = must(sync::Server::listen(lo(Family::ipv4)), "listen");
        NetConf conf;
        conf.close_timeout = 300ms;
        auto client = must(sync::Pipe::connect(server.local_address(), conf), "connect");
        auto peer = must(server.accept(kDeadline), "accept");
        const std::string chunk(1024 * 1024, 'y');
        for (int i = 0; i < 64; ++i)
            if (client.send(chunk, 100ms)) break;
        // peer, client and server (the last user: it joins the private thread) go here; the
        // queued bytes hold the client open until its close_timeout resets it.
    });
    CHECK(took < 5000ms);
    CHECK_FALSE(sync::running());
}

TEST_CASE("close reports bytes that never went out") {
    auto server = must(sync::Server::listen(lo(Family::ipv6)), "listen");
    NetConf conf;
    conf.close_timeout = 200ms;
    auto client = must(sync::Pipe::connect(server.local_address(), conf), "connect");
    auto peer = must(server.accept(kDeadline), "accept");
    const std::string chunk(1024 * 1024, 'z');
    for (int i = 0; i < 64; ++i)
        if (client.send(chunk, 100ms)) break;
    auto end = must(client.close(3000ms), "close");
    CHECK(end.reason == EndReason::timeout);
    CHECK(end.error == errc::close_timeout);
    CHECK(end.unsent_bytes > 0);
}

TEST_CASE("close's own timeout passes before the pipe's close_timeout") {
    auto server = must(sync::Server::listen(lo(Family::ipv4)), "listen");
    NetConf conf;
    conf.close_timeout = 2000ms;
    auto client = must(sync::Pipe::connect(server.local_address(), conf), "connect");
    auto peer = must(server.accept(kDeadline), "accept");
    const std::string chunk(1024 * 1024, 'w');
    for (int i = 0; i < 64; ++i)
        if (client.send(chunk, 100ms)) break;
    std::optional<Result<EndInfo>> r;
    auto took = elapsed([&] { r.emplace(client.close(150ms)); });
    REQUIRE_FALSE(*r);
    CHECK(r->error() == errc::sync_timeout);
    CHECK(took >= 150ms);
    CHECK(took < 1500ms);
    // The pipe still ends by its own bound, and says so.
    auto end = must(client.close(4000ms), "close again");
    CHECK(end.error == errc::close_timeout);
}

namespace {

// A packet server on its own loop thread: type 0 echoes flags and payload, type 1 answers
// after a second, type 2 fails.
struct PacketServer {
    PipePtr listener;
    Address address;
    std::vector<PacketConnectionPtr> conns;
    LoopThread thread;
    explicit PacketServer(Family f)
        : thread([&](Loop& loop) {
              listener = must(Pipe::listen(loop, lo(f)), "listen");
              address = listener->local_address();
              listener->on_accept([this](Pipe&, const PipePtr& p) {
                  auto c = PacketConnection::open(p).value();
                  c->handle(0, [](PacketRequest& rq) -> HandlerResult {
                      return PacketReply{rq.flags, std::string(rq.payload)};
                  });
                  c->handle(1, [](PacketRequest& rq) -> HandlerResult {
                      auto later = std::make_shared<PacketResponder>(rq.defer());
                      rq.connection().loop().call_later(1000ms, [later] { later->answer("late"); });
                      return {};
                  });
                  c->handle(2, [](PacketRequest&) -> HandlerResult {
                      return PacketFailure{"type 2 fails"};
                  });
                  conns.push_back(c);
              });
          }) {}
    ~PacketServer() {
        thread.post([this] {
            conns.clear();
            listener->close();
            listener.reset();
        });
        thread.stop();
    }
};

}  // namespace

TEST_CASE("packet requests: round trips, a failure, a timeout, an orderly close") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        PacketServer server(f);
        auto conn = must(sync::PacketConnection::connect(server.address), "connect");
        CHECK(conn.peer_address() == server.address);
        for (int i = 0; i < 20; ++i) {
            std::string body = payload(static_cast<std::size_t>(i) * 100, static_cast<unsigned>(i));
            PacketResult r = conn.request(0, static_cast<std::uint64_t>(i), body, 0);
            REQUIRE(r);
            CHECK(r.flags == static_cast<std::uint64_t>(i));
            CHECK(r.payload == body);
        }
        PacketResult on_channel = conn.request(0, 5, "channel 3", 3);
        REQUIRE(on_channel);
        CHECK(on_channel.payload == "channel 3");
        PacketResult failed = conn.request(2, "x");
        CHECK_FALSE(failed.error);
        CHECK_FALSE(failed.ok);
        CHECK(failed.payload == "type 2 fails");

        PacketResult slow;
        auto took = elapsed([&] { slow = conn.request(1, 0, "never", 0, 150ms); });
        CHECK(slow.error == errc::request_timeout);
        CHECK(took >= 150ms);
        CHECK(took < 2000ms);

        CHECK_FALSE(conn.close());
        CHECK(conn.request(0, "after close").error);
    }
}

TEST_CASE("packet requests from 8 threads: own connections and one shared connection") {
    PacketServer server(Family::ipv4);
    auto shared = must(sync::PacketConnection::connect(server.address.to_string()), "shared");
    std::atomic<int> good{0}, bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            auto own = sync::PacketConnection::connect(server.address);
            if (!own) {
                ++bad;
                return;
            }
            for (int i = 0; i < 100; ++i) {
                std::string body = "t" + std::to_string(t) + " i" + std::to_string(i);
                sync::PacketConnection& c = i % 2 ? shared : *own;
                PacketResult r = c.request(0, body);
                if (r && r.payload == body)
                    ++good;
                else
                    ++bad;
            }
            if (own->close()) ++bad;
        });
    for (auto& th : threads) th.join();
    CHECK(bad == 0);
    CHECK(good == 800);
    CHECK_FALSE(shared.close());
}

TEST_CASE("packet connect errors: refused, a bad packet conf") {
    Address dead;
    {
        Loop loop;
        dead = closed_tcp_port(loop, Family::ipv6);
    }
    auto refused = sync::PacketConnection::connect(dead);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == std::error_code(UV_ECONNREFUSED, uv_category()));
    PacketConf bad;
    bad.max_packet = 0;
    auto invalid = sync::PacketConnection::connect(dead, {}, bad);
    REQUIRE_FALSE(invalid);
    CHECK(invalid.error() == errc::invalid_config);
    CHECK(mentions(invalid.error(), "max_packet"));
}
