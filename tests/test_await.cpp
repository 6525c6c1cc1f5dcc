// Tasks and the co:: awaitables: results, timeouts, cancellation, deadlines, exceptions and
// loop teardown with suspended tasks, over IPv4 and IPv6 loopback.
#include "pipe_support.hpp"
#include "support.hpp"
#include "tls_support.hpp"

#include <pipeworks/await.hpp>
#include <pipeworks/task.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

using namespace pipeworks;
using namespace pw_test;

namespace {

Task<int> forty_two() {
    co_return 42;
}

Task<int> add_one(Loop& loop) {
    CHECK(!co_await co::sleep(loop, 1ms));
    int v = co_await forty_two();
    co_return v + 1;
}

Task<void> thrower(Loop& loop) {
    CHECK(!co_await co::sleep(loop, 1ms));
    throw std::runtime_error("thrown in a task");
}

// Runs `task` to its end on `loop` (bounded by kDeadline) and returns its outcome.
template <class T>
TaskOutcome<T> run_task(Loop& loop, Task<T> task) {
    auto out = std::make_shared<std::optional<TaskOutcome<T>>>();
    spawn(loop, std::move(task), [out](TaskOutcome<T>& o) { *out = std::move(o); });
    run_until(
        loop, [&] { return out->has_value(); }, "task done");
    REQUIRE(out->has_value());
    return std::move(**out);
}

// The coroutine echo server of examples/await_echo.cpp, in miniature: each client in its own
// task, echoing until the peer finishes.
Task<void> echo_client(PipePtr p) {
    for (;;) {
        RecvResult r = co_await co::recv(p, 2s);
        if (r.status == RecvResult::Status::timeout) continue;
        if (!r) break;
        if (co_await co::send(p, r.message.data)) break;
    }
    (void)co_await co::close(p);
}

Task<void> echo_server(Loop& loop, PipePtr server, int clients) {
    for (int served = 0; served < clients;) {
        AcceptResult a = co_await co::accept(server, 2s);
        if (a.status == RecvResult::Status::timeout) continue;
        if (!a) break;
        ++served;
        spawn(loop, echo_client(a.pipe));
    }
}

}  // namespace

TEST_CASE("Task: values come back through co_await; spawn's completion gets the outcome") {
    Loop loop;
    auto out = run_task(loop, add_one(loop));
    CHECK(out);
    CHECK(out.get() == 43);

    // A task that never suspends ends inside spawn().
    bool done = false;
    auto h = spawn(loop, forty_two(), [&](TaskOutcome<int>& o) {
        done = true;
        CHECK(o.get() == 42);
    });
    CHECK(done);
    CHECK(h.done());

    // A Task never started frees its frame unrun.
    { Task<int> never = add_one(loop); }
    Task<int> empty;
    CHECK(!empty.valid());
    CHECK_THROWS_AS(spawn(loop, std::move(empty)), std::logic_error);
}

TEST_CASE("Task: an exception reaches the awaiting task, spawn's completion, or Loop::run") {
    Loop loop;
    auto catcher = [](Loop& l) -> Task<std::string> {
        try {
            co_await thrower(l);
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "nothing thrown";
    };
    CHECK(run_task(loop, catcher(loop)).get() == "thrown in a task");

    auto out = run_task(loop, thrower(loop));
    CHECK(!out);
    CHECK_THROWS_WITH_AS(out.get(), "thrown in a task", std::runtime_error);

    // Detached, with no completion: the loop's run() rethrows it.
    spawn(loop, thrower(loop));
    CHECK_THROWS_WITH_AS(loop.run_until([] { return false; }, kDeadline), "thrown in a task",
                         std::runtime_error);
}

TEST_CASE("co::sleep resumes after its delay") {
    Loop loop;
    auto t = [](Loop& l) -> Task<std::int64_t> {
        auto start = std::chrono::steady_clock::now();
        Error e = co_await co::sleep(l, 30ms);
        CHECK(!e);
        co_return std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - start)
            .count();
    };
    CHECK(run_task(loop, t(loop)).get() >= 30);
}

TEST_CASE("a coroutine echo server and client, IPv4 and IPv6, connect by address and by name") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        spawn(loop, echo_server(loop, server, 3));
        auto client = [](Loop& l, std::string target, bool by_name) -> Task<std::string> {
            PipePtr p;
            if (by_name) {
                auto opened = co_await co::connect(l, target);
                REQUIRE(opened);
                p = *opened;
            } else {
                auto opened = co_await co::connect(l, must(Address::parse(target)));
                REQUIRE(opened);
                p = *opened;
            }
            CHECK(p->is_up());
            std::string got, expected;
            for (std::string m : {"hello", " coroutine", " world"}) {
                CHECK(!co_await co::send(p, m));
                expected += m;
                while (got.size() < expected.size()) {
                    RecvResult r = co_await co::recv(p, kDeadline);
                    REQUIRE(r);
                    got += r.message.data;
                }
            }
            // FIN: the server's task sees `finished`, closes, and the pipe ends in order.
            CHECK(!co_await co::shutdown(p));
            CHECK(p->end_info()->reason == EndReason::peer_close);
            co_return got;
        };
        const std::string at = server->local_address().to_string();
        CHECK(run_task(loop, client(loop, at, false)).get() == "hello coroutine world");
        CHECK(run_task(loop, client(loop, at, true)).get() == "hello coroutine world");
        if (f == Family::ipv4) {  // a name from the hosts file (never a DNS query)
            const std::string named = "localhost:" + std::to_string(server->local_address().port());
            CHECK(run_task(loop, client(loop, named, true)).get() == "hello coroutine world");
        }
        server->close();
    }
}

TEST_CASE("TLS: co::connect resumes after the handshake; a refused certificate is its error") {
    Key ca_key = ec_key();
    Cert ca = make_cert(ca_key.get(), "await test CA", nullptr, nullptr, 1, true);
    Key key = ec_key();
    Cert leaf = make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 2, false);
    Key other_key = ec_key();
    Cert other_ca = make_cert(other_key.get(), "another CA", nullptr, nullptr, 3, true);
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server =
            must(Pipe::listen(loop, lo(f), tls_server_conf(pem_of(leaf.get()), pem_of(key.get()))),
                 "listen");
        spawn(loop, echo_server(loop, server, 2));
        auto t = [](Loop& l, Address at, NetConf conf) -> Task<std::string> {
            auto c = co_await co::connect(l, at, conf);
            if (!c)
                co_return c.error() == errc::tls_failed ? "tls_failed"
                                                        : "error: " + c.error().message;
            CHECK((*c)->tls_info().verified);
            CHECK(!co_await co::send(*c, "secret"));
            RecvResult r = co_await co::recv(*c, kDeadline);
            (void)co_await co::close(*c);
            co_return r ? r.message.data : std::string("no echo");
        };
        const Address at = server->local_address();
        CHECK(run_task(loop, t(loop, at, tls_client_conf(pem_of(ca.get())))).get() == "secret");
        std::string refused =
            run_task(loop, t(loop, at, tls_client_conf(pem_of(other_ca.get())))).get();
        CAPTURE(refused);
        CHECK(refused == "tls_failed");
        server->close();
    }
}

TEST_CASE("co::connect: a refused connection and a bad name give the error") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        Address closed = closed_tcp_port(loop, f);
        auto t = [](Loop& l, Address a) -> Task<Error> {
            auto r = co_await co::connect(l, a);
            co_return r.error();
        };
        Error e = run_task(loop, t(loop, closed)).get();
        CHECK(e);
        CHECK(e.code == std::errc::connection_refused);
        auto bad = [](Loop& l) -> Task<Error> {
            auto r = co_await co::connect(l, std::string_view("127.0.0.1"));  // no port
            co_return r.error();
        };
        Error b = run_task(loop, bad(loop)).get();
        CHECK(b == errc::invalid_address);
    }
}

TEST_CASE("co::recv: a message, a timeout, the peer's FIN, the end; closing wakes the waiter") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto t = [](Loop& l, PipePtr p, PipePtr peer) -> Task<void> {
            RecvResult r = co_await co::recv(p, 30ms);
            CHECK(r.status == RecvResult::Status::timeout);
            CHECK(!peer->send("ping"));
            r = co_await co::recv(p, kDeadline);
            REQUIRE(r);
            CHECK(r.message.data == "ping");
            CHECK(r.message.from == peer->local_address());
            CHECK(!peer->shutdown());
            r = co_await co::recv(p, kDeadline);
            CHECK(r.status == RecvResult::Status::finished);
            // Still open for sending; closing it while a recv waits ends that wait.
            l.call_later(10ms, [p] { p->close(); });
            r = co_await co::recv(p, kDeadline);
            CHECK(r.status == RecvResult::Status::ended);
            CHECK(r.end.reason == EndReason::peer_close);  // both sides finished: in order
        };
        run_task(loop, t(loop, pair.accepted, pair.client)).get();

        auto other = tcp_pair(loop, f);
        auto closing = [](Loop& l, PipePtr p) -> Task<void> {
            l.call_later(10ms, [p] { p->close(); });
            RecvResult r = co_await co::recv(p, kDeadline);
            CHECK(r.status == RecvResult::Status::ended);
            CHECK(r.end.reason == EndReason::local_close);
        };
        run_task(loop, closing(loop, other.client)).get();
    }
}

TEST_CASE("co::accept: a client, a timeout, and the server's end") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        auto t = [](Loop& l, PipePtr s) -> Task<void> {
            AcceptResult a = co_await co::accept(s, 30ms);
            CHECK(a.status == RecvResult::Status::timeout);
            auto c = co_await co::connect(l, s->local_address());
            REQUIRE(c);
            a = co_await co::accept(s, kDeadline);
            REQUIRE(a);
            CHECK(a.pipe->peer_address() == (*c)->local_address());
            l.call_later(10ms, [s] { s->close(); });
            a = co_await co::accept(s, kDeadline);
            CHECK(a.status == RecvResult::Status::ended);
        };
        run_task(loop, t(loop, server)).get();
    }
}

TEST_CASE("co::send waits while the write queue is above the high watermark") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.high_watermark = 64 * 1024;
        conf.low_watermark = 16 * 1024;
        auto pair = tcp_pair(loop, f, {}, conf);
        pair.accepted->pause();  // nothing is read: the client's queue grows
        // More than the kernel's socket buffers hold, so the queue must grow.
        const std::string chunk = payload(1024 * 1024);
        constexpr int kChunks = 32;
        struct State {
            int sent = 0;
            bool blocked = false;
            Error last;
        };
        auto st = std::make_shared<State>();
        auto t = [](PipePtr p, std::string chunk, std::shared_ptr<State> st) -> Task<void> {
            for (int i = 0; i < kChunks; ++i) {
                st->blocked = !p->writable();
                st->last = co_await co::send(p, chunk);
                if (st->last) co_return;
                ++st->sent;
                CHECK(p->writable());  // resumed: the queue is below the high watermark
            }
        };
        auto h = spawn(loop, t(pair.client, chunk, st));
        run_for(loop, 100ms);
        // The peer reads nothing: the task waits, its last chunk above the high watermark.
        CHECK(!h.done());
        CHECK(st->sent < kChunks);
        CHECK(pair.client->write_queue_bytes() > conf.high_watermark);
        std::size_t got = 0;
        pair.accepted->on_message([&](Pipe&, const Message& m) { got += m.data.size(); });
        pair.accepted->resume();
        run_until(
            loop, [&] { return st->sent == kChunks && got == kChunks * chunk.size(); },
            "every chunk received");
        CHECK(!st->last);
    }
}

TEST_CASE("co::send on an ended pipe is refused; co::close ends in order") {
    Loop loop;
    auto pair = tcp_pair(loop, Family::ipv4);
    auto t = [](PipePtr p) -> Task<void> {
        CHECK(!co_await co::close(p));
        CHECK(p->ended());
        Error e = co_await co::send(p, "late");
        CHECK(e == errc::pipe_ended);
        CHECK(!co_await co::close(p));  // again: the same orderly end
        Error s = co_await co::shutdown(p);
        CHECK(s == errc::pipe_ended);
    };
    run_task(loop, t(pair.client)).get();
}

TEST_CASE("UDP: co::udp, co::send_to, co::recv and co::send_recv, IPv4 and IPv6") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto t = [](Loop& l, Family fam) -> Task<void> {
            auto echo = co_await co::udp(l, lo(fam));
            REQUIRE(echo);
            NetConf conf;
            conf.send_retry = 2;
            auto client = co_await co::udp(l, lo(fam), (*echo)->local_address(), conf);
            REQUIRE(client);
            CHECK(!co_await co::send(*client, "one"));
            RecvResult r = co_await co::recv(*echo, kDeadline);
            REQUIRE(r);
            CHECK(r.message.data == "one");
            CHECK(!co_await co::send_to(*echo, "back", r.message.from));
            RecvResult b = co_await co::recv(*client, kDeadline);
            REQUIRE(b);
            CHECK(b.message.data == "back");

            // The first request is lost; send_recv asks again after 50 ms.
            int seen = 0;
            (*echo)->subscribe(Pattern::any(), {}, [&seen](Pipe& p, const Message& m) {
                if (++seen > 1) (void)p.send_to(m.data, m.from);
            });
            RecvResult reply = co_await co::send_recv(*client, "again", all_messages, 50ms);
            REQUIRE(reply);
            CHECK(reply.message.data == "again");
            CHECK(seen == 2);
            (*client)->close();
            (*echo)->close();
        };
        run_task(loop, t(loop, f)).get();
    }
}

TEST_CASE("cancelling a task ends its wait with errc::cancelled; later waits end at once") {
    Loop loop;
    auto pair = tcp_pair(loop, Family::ipv6);
    struct State {
        RecvResult recv;
        Error sleep, send;
        Result<PipePtr> connect = Error{};
        bool finished = false;
    };
    auto st = std::make_shared<State>();
    auto t = [](Loop& l, PipePtr p, std::shared_ptr<State> st) -> Task<void> {
        st->recv = co_await co::recv(p, kDeadline);
        st->sleep = co_await co::sleep(l, 10s);
        st->send = co_await co::send(p, "never sent");
        st->connect = co_await co::connect(l, p->peer_address());
        st->finished = true;
    };
    auto h = spawn(loop, t(loop, pair.client, st));
    run_for(loop, 20ms);
    CHECK(!h.done());
    h.cancel();  // resumes the task inside this call; it runs to its end
    CHECK(h.done());
    CHECK(h.cancelled());
    CHECK(st->finished);
    CHECK(st->recv.status == RecvResult::Status::ended);
    CHECK(st->recv.end.error == errc::cancelled);
    CHECK(st->sleep == errc::cancelled);
    CHECK(st->send == errc::cancelled);
    CHECK(st->connect.error() == errc::cancelled);
    CHECK(pair.client->stats().bytes_out == 0);
    h.cancel();  // harmless once ended
}

TEST_CASE("cancelling a task waiting for a drain: the bytes already accepted still arrive") {
    Loop loop;
    NetConf conf;
    conf.high_watermark = 16 * 1024;
    conf.low_watermark = 4 * 1024;
    auto pair = tcp_pair(loop, Family::ipv4, {}, conf);
    pair.accepted->pause();
    const std::string big = payload(16 * 1024 * 1024, 7);  // more than the socket buffers
    Error result;
    auto t = [](PipePtr p, const std::string& bytes, Error& out) -> Task<void> {
        out = co_await co::send(p, bytes);
    };
    auto h = spawn(loop, t(pair.client, big, result));
    run_for(loop, 50ms);
    CHECK(!h.done());
    h.cancel();
    CHECK(result == errc::cancelled);
    std::string got;
    pair.accepted->on_message([&](Pipe&, const Message& m) { got += m.data; });
    pair.accepted->resume();
    run_until(
        loop, [&] { return got.size() == big.size(); }, "the accepted bytes");
    CHECK(got == big);
}

TEST_CASE("co::deadline: ends a slow wait with its status, leaves a quick one alone") {
    Loop loop;
    auto pair = tcp_pair(loop, Family::ipv4);
    auto black = blackhole_listener(Family::ipv4);
    auto t = [](Loop& l, PipePtr p, Address hole, bool full) -> Task<void> {
        Error s = co_await co::deadline(co::sleep(l, 10s), 30ms);
        CHECK(s == errc::deadline_passed);
        CHECK(!co_await co::deadline(co::sleep(l, 1ms), 1s));

        RecvResult r = co_await co::deadline(co::recv(p, 10s), 30ms);
        CHECK(r.status == RecvResult::Status::timeout);
        if (full) {
            auto c = co_await co::deadline(co::connect(l, hole), 50ms);
            CHECK(c.error() == errc::deadline_passed);
        }
    };
    run_task(loop, t(loop, pair.accepted, black.address, black.full)).get();
}

TEST_CASE("co::deadline on recv loses no message to the expired wait") {
    Loop loop;
    auto pair = tcp_pair(loop, Family::ipv6);
    auto t = [](PipePtr p, PipePtr peer) -> Task<std::string> {
        RecvResult r = co_await co::deadline(co::recv(p, 10s), 20ms);
        CHECK(r.status == RecvResult::Status::timeout);
        CHECK(!peer->send("after"));
        r = co_await co::recv(p, kDeadline);
        co_return r ? r.message.data : std::string("lost");
    };
    CHECK(run_task(loop, t(pair.accepted, pair.client)).get() == "after");
}

TEST_CASE("packets: co::request gets the response; timeouts, deadlines and cancellation") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::vector<PacketResponder> parked;
        server->on_accept([&](Pipe&, const PipePtr& accepted) {
            auto conn = must(PacketConnection::open(accepted), "open");
            conn->handle(
                0, [](PacketRequest& rq) -> HandlerResult { return std::string(rq.payload); });
            // Type 1 never answers (until the connection ends).
            conn->handle(1, [&](PacketRequest& rq) -> HandlerResult {
                parked.push_back(rq.defer());
                return {};
            });
        });
        auto pipe = must(Pipe::connect(loop, server->local_address()), "connect");
        auto conn = must(PacketConnection::open(pipe), "open");
        auto t = [](PacketConnectionPtr c) -> Task<void> {
            PacketResult r = co_await co::request(c, 0, "echo me");
            CHECK(r);
            CHECK(r.payload == "echo me");
            r = co_await co::request(c, 1, "slow", 0, 0, 30ms);
            CHECK(r.error == errc::request_timeout);
            r = co_await co::deadline(co::request(c, 1, "slow"), 30ms);
            CHECK(r.error == errc::request_timeout);
            r = co_await co::request(c, 0, "still fine");
            CHECK(r.payload == "still fine");
        };
        run_task(loop, t(conn)).get();

        auto cancelled = [](PacketConnectionPtr c) -> Task<PacketResult> {
            co_return co_await co::request(c, 1, "never answered");
        };
        PacketResult result;
        auto h =
            spawn(loop, cancelled(conn), [&](TaskOutcome<PacketResult>& o) { result = o.get(); });
        run_for(loop, 20ms);
        h.cancel();
        CHECK(result.error == errc::cancelled);
        CHECK(conn->stats().outstanding == 0);
        parked.clear();  // answered now (a failure), so the server side can close in order
        conn->close();
        server->close();
        run_until(
            loop, [&] { return conn->ended(); }, "connection ended");
    }
}

TEST_CASE("loop teardown: every suspended task resumes with errc::loop_closed and ends") {
    struct State {
        int ended = 0;
        RecvResult recv;
        AcceptResult accept;
        Error sleep, send, after;
        Result<PipePtr> connect = Error{};
        PacketResult request;
    };
    auto st = std::make_shared<State>();
    auto black = blackhole_listener(Family::ipv4);
    {
        Loop loop;
        auto pair = tcp_pair(loop, Family::ipv4);
        NetConf small;
        small.high_watermark = 8 * 1024;
        small.low_watermark = 1024;
        auto pair2 = tcp_pair(loop, Family::ipv6, {}, small);
        pair2.accepted->pause();
        auto packet_server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
        std::vector<PacketResponder> parked;
        packet_server->on_accept([&](Pipe&, const PipePtr& accepted) {
            auto conn = must(PacketConnection::open(accepted), "open");
            conn->handle(0, [&](PacketRequest& rq) -> HandlerResult {
                parked.push_back(rq.defer());
                return {};
            });
        });
        auto conn = must(PacketConnection::open(
                             must(Pipe::connect(loop, packet_server->local_address()), "connect")),
                         "open");

        auto recv = [](PipePtr p, std::shared_ptr<State> s) -> Task<void> {
            s->recv = co_await co::recv(p, 60s);
            // Later waits end at once, the same way.
            s->after = co_await co::sleep(p->loop(), 60s);
            ++s->ended;
        };
        auto accept = [](PipePtr p, std::shared_ptr<State> s) -> Task<void> {
            s->accept = co_await co::accept(p, 60s);
            ++s->ended;
        };
        auto sleep = [](Loop& l, std::shared_ptr<State> s) -> Task<void> {
            s->sleep = co_await co::sleep(l, 60s);
            ++s->ended;
        };
        auto send = [](PipePtr p, std::shared_ptr<State> s) -> Task<void> {
            s->send = co_await co::send(p, payload(16 * 1024 * 1024));
            ++s->ended;
        };
        auto connect = [](Loop& l, Address a, std::shared_ptr<State> s) -> Task<void> {
            NetConf c;
            c.con_timeout = 60s;
            s->connect = co_await co::connect(l, a, c);
            ++s->ended;
        };
        auto request = [](PacketConnectionPtr c, std::shared_ptr<State> s) -> Task<void> {
            s->request = co_await co::request(c, 0, "parked");
            ++s->ended;
        };
        // A task awaiting a task awaiting the operation: the whole chain ends.
        auto outer = [](Loop& l, std::shared_ptr<State> s,
                        Task<void> (*inner)(Loop&, std::shared_ptr<State>)) -> Task<void> {
            co_await inner(l, s);
            ++s->ended;
        };
        spawn(loop, recv(pair.client, st));
        spawn(loop, accept(pair.server, st));
        spawn(loop, outer(loop, st, +sleep));
        spawn(loop, send(pair2.client, st));
        if (black.full) spawn(loop, connect(loop, black.address, st));
        spawn(loop, request(conn, st));
        run_for(loop, 50ms);
        CHECK(st->ended == 0);
    }
    CHECK(st->ended == (black.full ? 7 : 6));
    CHECK(st->recv.status == RecvResult::Status::ended);
    CHECK(st->recv.end.error == errc::loop_closed);
    CHECK(st->after == errc::loop_closed);
    CHECK(st->accept.status == RecvResult::Status::ended);
    CHECK(st->accept.end.error == errc::loop_closed);
    CHECK(st->sleep == errc::loop_closed);
    CHECK(st->send == errc::loop_closed);
    if (black.full) CHECK(st->connect.error() == errc::loop_closed);
    CHECK(st->request.error == errc::loop_closed);
}

TEST_CASE("loop teardown: a spawned task's completion runs; an unstarted task is just freed") {
    bool done = false;
    Error seen;
    Task<void> unstarted;
    {
        Loop loop;
        auto t = [](Loop& l, Error& out) -> Task<void> {
            out = co_await co::sleep(l, 60s);
            if (out != errc::loop_closed) co_return;
            // What a woken task opens or schedules is shut down by ~Loop too.
            (void)l.call_later(60s, [] {});
            auto extra = Pipe::udp(l, lo(Family::ipv4));
            CHECK(extra);
        };
        spawn(loop, t(loop, seen), [&](TaskOutcome<void>& o) {
            CHECK(o);
            done = true;
        });
        unstarted = t(loop, seen);
        run_for(loop, 10ms);
    }
    CHECK(done);
    CHECK(seen == errc::loop_closed);
}

TEST_CASE("a cancelled co::recv or co::accept loses nothing: the next reader or acceptor gets it") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        // A task waits for a message and is cancelled; the pipe's wait stays registered, so the
        // message that then comes is handed to that wait, which gives it back.
        auto waiting = [](PipePtr p) -> Task<void> { (void)co_await co::recv(p, kDeadline); };
        auto h = spawn(loop, waiting(pair.client));
        run_for(loop, 20ms);
        h.cancel();
        REQUIRE(h.cancelled());
        REQUIRE(!pair.accepted->send("kept"));
        run_for(loop, 50ms);
        auto queued = pair.client->try_recv();
        REQUIRE(queued.has_value());
        CHECK(queued->data == "kept");
        // Given back while another task waits: that one gets it.
        std::string second;
        auto first = spawn(loop, waiting(pair.client));
        auto reader = [](PipePtr p, std::string& out) -> Task<void> {
            RecvResult r = co_await co::recv(p, kDeadline);
            if (r) out = r.message.data;
        };
        run_for(loop, 10ms);
        auto h2 = spawn(loop, reader(pair.client, second));
        run_for(loop, 10ms);
        first.cancel();
        REQUIRE(!pair.accepted->send("for the second"));
        run_until(
            loop, [&] { return h2.done(); }, "the second reader");
        CHECK(second == "for the second");

        // The same for a server's next client.
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        auto accepting = [](PipePtr s) -> Task<void> { (void)co_await co::accept(s, kDeadline); };
        auto ha = spawn(loop, accepting(server));
        run_for(loop, 10ms);
        ha.cancel();
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        std::optional<PipePtr> got;
        run_until(
            loop,
            [&] {
                got = server->try_accept();
                return got.has_value();
            },
            "the client, queued for the next accept");
        REQUIRE(*got);
        CHECK((*got)->is_up());
        REQUIRE(!client->send("hello"));
        auto msgs = collect(**got);
        run_until(
            loop, [&] { return msgs->data == "hello"; }, "the accepted pipe works");
    }
}
