// The packet layer: PacketConnection between two pipeworks peers over loopback (requests,
// handlers, channels, timeouts, cancel, shutdown in both orders, a burst), and against a raw
// pipe that plays a peer byte by byte (the wire vectors, and every kind of bad input).
#include "alloc_counter.hpp"
#include "support.hpp"

#include <pipeworks/packet.hpp>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

// The handlers of the examples: 0 echoes, 1 answers flags = payload length, 2 fails, 3 echoes
// flags and payload.
void add_example_handlers(PacketConnection& c) {
    c.handle(0, [](PacketRequest& rq) -> HandlerResult { return std::string(rq.payload); });
    c.handle(1, [](PacketRequest& rq) -> HandlerResult {
        return static_cast<std::uint64_t>(rq.payload.size());
    });
    c.handle(2, [](PacketRequest&) -> HandlerResult { throw std::runtime_error("type 2 fails"); });
    c.handle(3, [](PacketRequest& rq) -> HandlerResult {
        return PacketReply{rq.flags, std::string(rq.payload)};
    });
}

// Two connected pipeworks peers: `client` connected, `server` the accepted side.
struct Session {
    PipePtr listener;
    PacketConnectionPtr client, server;
    std::optional<Error> client_end, server_end;

    Session(Loop& loop, const PacketConf& conf = {}) {
        listener = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
        listener->on_accept([this, conf](Pipe&, const PipePtr& p) {
            server = must(PacketConnection::open(p, conf), "open accepted");
            add_example_handlers(*server);
            server->on_end([this](PacketConnection&, const Error& e) { server_end = e; });
        });
        auto pipe = must(Pipe::connect(loop, listener->local_address()), "connect");
        client = must(PacketConnection::open(pipe, conf), "open client");
        add_example_handlers(*client);
        client->on_end([this](PacketConnection&, const Error& e) { client_end = e; });
        run_until(
            loop, [&] { return server != nullptr; }, "accepted");
    }
};

// Submits and runs the loop until the result is in.
PacketResult call(Loop& loop, PacketConnection& c, std::uint64_t type, std::uint64_t flags,
                  std::string_view payload, std::uint64_t channel = 0) {
    std::optional<PacketResult> got;
    c.submit(type, flags, payload, channel, [&](PacketResult& r) { got = std::move(r); });
    run_until(
        loop, [&] { return got.has_value(); }, "response");
    return got.value_or(PacketResult{});
}

// A connection whose peer is a raw pipe: the test writes and reads the peer's bytes itself.
struct RawPeer {
    PipePtr listener, raw;
    PacketConnectionPtr conn;
    std::string received;  // every byte the connection sent
    std::optional<Error> end;
    std::optional<EndInfo> raw_end;

    RawPeer(Loop& loop, const PacketConf& conf = {}) {
        listener = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
        listener->on_accept([this](Pipe&, const PipePtr& p) {
            raw = p;
            p->on_message([this](Pipe&, const Message& m) { received += m.data; });
            p->on_end([this](Pipe&, const EndInfo& e) { raw_end = e; });
        });
        auto pipe = must(Pipe::connect(loop, listener->local_address()), "connect");
        conn = must(PacketConnection::open(pipe, conf), "open");
        conn->on_end([this](PacketConnection&, const Error& e) { end = e; });
        run_until(
            loop, [&] { return raw != nullptr; }, "accepted");
    }
};

// Once it has ended, dropping the last reference of ours frees the connection: nothing it
// left behind (a callback, a timer, a responder) still holds it.
void expect_freed(Loop& loop, PacketConnectionPtr& conn) {
    std::weak_ptr<PacketConnection> weak = conn;
    conn.reset();
    run_until(
        loop, [&] { return weak.expired(); }, "the connection is freed");
}

// A request is pending on `peer.conn`, then the raw peer sends `wire`: the connection must end
// with a protocol error naming `what`, and the pending request must fail with it.
// With `then_close` the raw peer closes its side after the bytes.
void expect_protocol_error(std::string_view wire, std::string_view what, PacketConf conf = {},
                           bool then_close = false) {
    CAPTURE(what);
    Loop loop;
    RawPeer peer(loop, conf);
    std::optional<PacketResult> pending;
    peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    REQUIRE(!peer.raw->send(wire));
    if (then_close) peer.raw->close();
    run_until(
        loop, [&] { return peer.end.has_value() && pending.has_value(); }, "protocol error");
    REQUIRE(peer.end);
    CHECK(*peer.end == errc::protocol_error);
    CHECK_MESSAGE(mentions(*peer.end, what), peer.end->message);
    REQUIRE(pending);
    CHECK(pending->error == errc::protocol_error);
    CHECK_MESSAGE(mentions(pending->error, what), pending->error.message);
    CHECK(!*pending);
    CHECK(peer.conn->ended());
    CHECK(peer.conn->stats().outstanding == 0);
    run_until(
        loop, [&] { return peer.raw_end.has_value(); }, "the raw peer sees the close");
    expect_freed(loop, peer.conn);
}

}  // namespace

TEST_CASE("a session: every handler result, channel 0 and another, payloads 0 B to 1 MiB") {
    Loop loop;
    Session s(loop);
    const std::string big(1024 * 1024, 'q');
    for (std::uint64_t ch : {std::uint64_t{0}, std::uint64_t{7}}) {
        CAPTURE(ch);
        for (const std::string& payload : {std::string(), std::string(200, 'p'), big}) {
            CAPTURE(payload.size());
            // Both directions: the server submits to the client too.
            for (PacketConnection* c : {s.client.get(), s.server.get()}) {
                PacketResult r = call(loop, *c, 0, 0, payload, ch);
                CHECK(!r.error);
                CHECK(r.ok);
                CHECK(r.flags == 0);
                CHECK((r.payload == payload));  // no decomposition: 1 MiB is not printed
                r = call(loop, *c, 1, 0, payload, ch);
                CHECK((r.ok && r.flags == payload.size() && r.payload.empty()));
                r = call(loop, *c, 2, 0, payload, ch);
                CHECK(!r.error);
                CHECK(!r.ok);
                CHECK(r.flags == 0);
                CHECK(r.payload == "type 2 fails");
                // The most a response carries: 2^61 - 1.
                r = call(loop, *c, 3, (std::uint64_t{1} << 61) - 1, payload, ch);
                CHECK(r.ok);
                CHECK(r.flags == (std::uint64_t{1} << 61) - 1);
                CHECK((r.payload == payload));
                // Request flags above it cannot be echoed: a failure response says why.
                r = call(loop, *c, 3, std::uint64_t{1} << 61, payload, ch);
                CHECK((!r.ok && mentions(Error({}, r.payload), "do not fit")));
                r = call(loop, *c, 3, 12345, payload, ch);
                CHECK((r.ok && r.flags == 12345 && r.payload == payload));
                r = call(loop, *c, 9, 0, payload, ch);  // no handler
                CHECK((!r.ok && r.flags == 0 && mentions(Error({}, r.payload), "no handler")));
            }
        }
    }
    CHECK(s.client->stats().unmatched_responses == 0);
    CHECK(s.client->stats().outstanding == 0);
}

TEST_CASE("handler results: nothing, flags, bytes, text, (flags, bytes), failure, throw") {
    Loop loop;
    Session s(loop);
    s.server->handle(10, [](PacketRequest&) -> HandlerResult { return {}; });
    s.server->handle(11, [](PacketRequest&) -> HandlerResult { return 5u; });
    s.server->handle(12, [](PacketRequest&) -> HandlerResult { return "bytes"; });
    s.server->handle(13, [](PacketRequest&) -> HandlerResult { return u8"text ü"; });
    s.server->handle(14, [](PacketRequest&) -> HandlerResult { return PacketReply{7, "both"}; });
    s.server->handle(15, [](PacketRequest&) -> HandlerResult { return PacketFailure{"nope"}; });
    s.server->handle(16, [](PacketRequest&) -> HandlerResult { throw 42; });
    s.server->handle(17, [](PacketRequest& rq) -> HandlerResult {
        return "type " + std::to_string(rq.type) + " flags " + std::to_string(rq.flags) +
               " channel " + std::to_string(rq.channel);
    });
    PacketResult r = call(loop, *s.client, 10, 0, "x");
    CHECK((r.ok && r.flags == 0 && r.payload.empty()));
    r = call(loop, *s.client, 11, 0, "x");
    CHECK((r.ok && r.flags == 5 && r.payload.empty()));
    r = call(loop, *s.client, 12, 0, "x");
    CHECK((r.ok && r.flags == 0 && r.payload == "bytes"));
    r = call(loop, *s.client, 13, 0, "x");
    CHECK((r.ok && r.payload == "text \xc3\xbc"));
    r = call(loop, *s.client, 14, 0, "x");
    CHECK((r.ok && r.flags == 7 && r.payload == "both"));
    r = call(loop, *s.client, 15, 0, "x");
    CHECK((!r.ok && r.flags == 0 && r.payload == "nope"));
    CHECK(static_cast<bool>(r) == false);
    r = call(loop, *s.client, 16, 0, "x");
    CHECK((!r.ok && !r.payload.empty()));
    r = call(loop, *s.client, 17, 9, "", 123456789);
    CHECK(r.payload == "type 17 flags 9 channel 123456789");
    // Replacing and removing a handler.
    s.server->handle(10, [](PacketRequest&) -> HandlerResult { return "new"; });
    CHECK(call(loop, *s.client, 10, 0, "").payload == "new");
    s.server->handle(10, nullptr);
    CHECK(!call(loop, *s.client, 10, 0, "").ok);
    CHECK(s.server->stats().refused == 1);
}

TEST_CASE("asynchronous answers: later, out of order, twice, never") {
    Loop loop;
    Session s(loop);
    std::vector<PacketResponder> held;
    s.server->handle(20, [&](PacketRequest& rq) -> HandlerResult {
        held.push_back(rq.defer());
        CHECK(held.back().pending());
        CHECK(!rq.defer().pending());  // a second defer gives an empty responder
        return "ignored";
    });
    std::vector<std::string> order;
    for (int i = 0; i < 3; ++i)
        s.client->submit(20, 0, std::to_string(i), 0, [&, i](PacketResult& r) {
            CHECK(r.ok);
            CHECK(r.payload == "answer " + std::to_string(i));
            order.push_back(r.payload);
        });
    run_until(
        loop, [&] { return held.size() == 3; }, "three deferred requests");
    CHECK(s.server->stats().handlers_in_flight == 3);
    // Answered in reverse order, one of them from a timer.
    CHECK(held[2].answer(std::string("answer 2")));
    CHECK(!held[2].answer(std::string("twice")));  // the second answer is ignored
    CHECK(!held[2].pending());
    PacketResponder moved = std::move(held[1]);
    CHECK(!held[1].pending());
    loop.call_later(10ms, [&] { CHECK(moved.answer(std::string("answer 1"))); });
    run_until(
        loop, [&] { return order.size() == 2; }, "two answers");
    CHECK(held[0].answer(std::string("answer 0")));
    run_until(
        loop, [&] { return order.size() == 3; }, "three answers");
    CHECK(order == std::vector<std::string>{"answer 2", "answer 1", "answer 0"});

    // Never answered: the responder's destruction answers with a failure.
    std::optional<PacketResult> dropped;
    s.client->submit(20, 0, "", 0, [&](PacketResult& r) { dropped = std::move(r); });
    run_until(
        loop, [&] { return held.size() == 4; }, "deferred");
    held.clear();
    run_until(
        loop, [&] { return dropped.has_value(); }, "failure of a dropped responder");
    CHECK(!dropped->ok);
    CHECK(dropped->payload == "the handler never answered");

    // A handler that defers and then throws answers with the failure.
    s.server->handle(21, [](PacketRequest& rq) -> HandlerResult {
        PacketResponder r = rq.defer();
        throw std::runtime_error("after defer");
    });
    PacketResult r = call(loop, *s.client, 21, 0, "");
    CHECK((!r.ok && r.payload == "the handler never answered"));
    CHECK(s.server->stats().handlers_in_flight == 0);
}

TEST_CASE("a burst of 1000 concurrent requests, answered out of order") {
    Loop loop;
    Session s(loop);
    std::vector<PacketResponder> held;
    s.server->handle(30, [&](PacketRequest& rq) -> HandlerResult {
        if (rq.flags % 3 == 0) {  // a third of them answer later, in reverse
            held.push_back(rq.defer());
            return {};
        }
        return PacketReply{rq.flags, std::string(rq.payload)};
    });
    constexpr int kN = 1000;
    int good = 0, bad = 0;
    for (int i = 0; i < kN; ++i) {
        const std::string payload = "request " + std::to_string(i);
        const std::uint64_t ch = static_cast<std::uint64_t>(i % 4);
        s.client->submit(
            30, static_cast<std::uint64_t>(i), payload, ch, [&, i, payload](PacketResult& r) {
                const bool later = i % 3 == 0;
                if (r.ok &&
                    (later ? r.payload == "late"
                           : r.payload == payload && r.flags == static_cast<std::uint64_t>(i)))
                    ++good;
                else
                    ++bad;
            });
    }
    CHECK(s.client->stats().outstanding == kN);
    run_until(
        loop, [&] { return held.size() == (kN + 2) / 3; }, "the deferred third");
    while (!held.empty()) {
        CHECK(held.back().answer(std::string("late")));
        held.pop_back();
    }
    run_until(
        loop, [&] { return good + bad == kN; }, "every response");
    CHECK(good == kN);
    CHECK(s.client->stats().responses_received == kN);
    CHECK(s.client->stats().outstanding == 0);
}

TEST_CASE("timeouts and cancel: the callback runs once; late responses are dropped and counted") {
    Loop loop;
    Session s(loop);
    std::vector<PacketResponder> held;
    s.server->handle(40, [&](PacketRequest& rq) -> HandlerResult {
        held.push_back(rq.defer());
        return {};
    });
    std::optional<PacketResult> timed, cancelled, fine;
    s.client->submit(
        40, 0, "", 0, [&](PacketResult& r) { timed = std::move(r); }, 50ms);
    RequestId id = s.client->submit(40, 0, "", 3, [&](PacketResult& r) {
        CHECK(!cancelled);
        cancelled = std::move(r);
    });
    CHECK(id.valid);
    CHECK(id.channel == 3);
    CHECK(id.tag == 0);  // other channels start at tag 0
    s.client->submit(
        40, 0, "", 0, [&](PacketResult& r) { fine = std::move(r); }, 5000ms);
    run_until(
        loop, [&] { return held.size() == 3; }, "three deferred");
    CHECK(s.client->cancel(id));
    CHECK(!s.client->cancel(id));
    REQUIRE(cancelled);
    CHECK(cancelled->error == errc::request_cancelled);
    CHECK(mentions(cancelled->error, "(channel 3, tag 0) cancelled"));
    run_until(
        loop, [&] { return timed.has_value(); }, "timeout");
    CHECK(timed->error == errc::request_timeout);
    CHECK(mentions(timed->error, "no response within the timeout"));
    CHECK(s.client->stats().timeouts == 1);
    CHECK(make_error_code(errc::request_timeout).message() ==
          "no response within the request's timeout");
    CHECK(make_error_code(errc::request_cancelled).message() == "the request was cancelled");
    CHECK(s.client->stats().outstanding == 1);
    for (auto& h : held) h.answer(std::string("now"));
    run_until(
        loop, [&] { return fine.has_value(); }, "the third answer");
    CHECK(fine->payload == "now");
    run_until(
        loop, [&] { return s.client->stats().late_responses == 2; }, "two late responses");
    CHECK(s.client->stats().unmatched_responses == 0);
}

TEST_CASE("shutdown, client first: ERQ, handlers finish, EOF, every request answered") {
    Loop loop;
    Session s(loop);
    std::optional<PacketResponder> slow;
    s.client->handle(50, [&](PacketRequest& rq) -> HandlerResult {
        slow = rq.defer();
        return {};
    });
    // The server's request is in the client's handler when the client closes.
    std::optional<PacketResult> server_got, client_got;
    s.server->submit(50, 0, "", 0, [&](PacketResult& r) { server_got = std::move(r); });
    run_until(
        loop, [&] { return slow.has_value(); }, "the client's handler runs");
    s.client->submit(0, 0, "last", 0, [&](PacketResult& r) { client_got = std::move(r); });
    s.client->close();
    CHECK(s.client->requests_ended());
    std::optional<PacketResult> refused;
    s.client->submit(0, 0, "after close", 0, [&](PacketResult& r) { refused = std::move(r); });
    CHECK(!refused);  // never inside submit()
    run_until(
        loop, [&] { return refused.has_value() && client_got.has_value(); }, "results");
    CHECK(refused->error == errc::pipe_ended);
    CHECK(client_got->payload == "last");  // answered before the server's EOF
    run_for(loop, 50ms);
    CHECK(!s.client->ended());  // still waiting for its own handler
    CHECK(s.server->peer_requests_ended());
    slow->answer(std::string("done"));
    run_until(
        loop, [&] { return s.client_end.has_value() && s.server_end.has_value(); }, "both end");
    CHECK(!*s.client_end);  // orderly: both EOFs exchanged
    CHECK(!*s.server_end);
    REQUIRE(server_got);
    CHECK((server_got->ok && server_got->payload == "done"));
    CHECK(s.client->end_error().has_value());
    CHECK(!*s.client->end_error());
}

TEST_CASE("a handler that calls close() still answers before the EOF") {
    Loop loop;
    Session s(loop);
    s.server->handle(51, [&](PacketRequest& rq) -> HandlerResult {
        rq.connection().close();
        return "answered first";
    });
    PacketResult r = call(loop, *s.client, 51, 0, "");
    CHECK((r.ok && r.payload == "answered first"));
    run_until(
        loop, [&] { return s.client_end.has_value() && s.server_end.has_value(); }, "both end");
    CHECK(!*s.client_end);
    CHECK(!*s.server_end);
}

TEST_CASE("shutdown, server first; requests after the peer's ERQ are refused") {
    Loop loop;
    Session s(loop);
    s.server->end_requests();
    run_until(
        loop, [&] { return s.client->peer_requests_ended(); }, "the client sees ERQ");
    // The client still makes requests: ERQ only ends the server's.
    CHECK(call(loop, *s.client, 0, 0, "still").payload == "still");
    std::optional<PacketResult> refused;
    s.server->submit(0, 0, "", 0, [&](PacketResult& r) { refused = std::move(r); });
    run_until(
        loop, [&] { return refused.has_value(); }, "refused locally");
    CHECK(refused->error == errc::pipe_ended);

    // The client ends its requests too (a request after ERQ is refused by the receiver: see
    // the raw-peer test below), then the server closes first.
    s.client->end_requests();
    run_until(
        loop, [&] { return s.server->peer_requests_ended(); }, "the server sees ERQ");
    s.server->close();
    run_until(
        loop, [&] { return s.client_end.has_value() && s.server_end.has_value(); }, "both end");
    CHECK(!*s.client_end);
    CHECK(!*s.server_end);
}

TEST_CASE("after the peer's ERQ a request gets 'requests no longer allowed'") {
    Loop loop;
    RawPeer peer(loop);
    add_example_handlers(*peer.conn);
    // The raw peer sends ERQ, then a request anyway (tag 2, wire rq_type 1, "hi").
    REQUIRE(!peer.raw->send(bytes({0x03, 0x01, 0x02, 0x00, 0x05, 0x02, 0x02, 0x01, 'h', 'i'})));
    const std::string refusal = "requests no longer allowed";
    std::string expected = bytes({static_cast<int>(2 + refusal.size()), 0x02, 0x00}) + refusal;
    run_until(
        loop, [&] { return peer.received.size() >= expected.size(); }, "refusal");
    CHECK(peer.received == expected);
    CHECK(peer.conn->stats().refused == 1);
}

TEST_CASE("the wire bytes a connection writes and reads are Python's") {
    Loop loop;
    RawPeer peer(loop);
    add_example_handlers(*peer.conn);
    std::optional<PacketResult> got, got1;
    // The first real request of a session: submit(1, "hi") on channel 0 has tag 2.
    peer.conn->submit(1, 0, "hi", 0, [&](PacketResult& r) { got = std::move(r); });
    // submit(0, flags 5, "abc", channel 1): tag 0.
    peer.conn->submit(0, 5, "abc", 1, [&](PacketResult& r) { got1 = std::move(r); });
    const std::string sent = bytes({0x05, 0x02, 0x02, 0x02, 'h', 'i'}) +
                             bytes({0x07, 0x00, 0x17, 0x01, 0x01, 'a', 'b', 'c'});
    run_until(
        loop, [&] { return peer.received.size() >= sent.size(); }, "two requests");
    CHECK(peer.received == sent);
    peer.received.clear();
    // Answers, in the other order: OK response on ch 1, tag 0, rflags 5, "abc"; then a
    // failure for tag 2.
    const std::string why = "exception during handler";
    REQUIRE(!peer.raw->send(bytes({0x06, 0x00, 0x2d, 0x01, 'a', 'b', 'c'}) +
                            bytes({0x1a, 0x02, 0x00}) + why));
    run_until(
        loop, [&] { return got.has_value() && got1.has_value(); }, "responses");
    CHECK((got1->ok && got1->flags == 5 && got1->payload == "abc"));
    CHECK((!got->ok && got->flags == 0 && got->payload == why));
    // A request from the peer: tag 0, ch 0, wire rq_type 1 (type 0, the echo), "hi".
    REQUIRE(!peer.raw->send(bytes({0x05, 0x00, 0x02, 0x01, 'h', 'i'})));
    const std::string answer = bytes({0x04, 0x00, 0x04, 'h', 'i'});
    run_until(
        loop, [&] { return peer.received.size() >= answer.size(); }, "the echo");
    CHECK(peer.received == answer);
    peer.received.clear();
    // Shutdown: ERQ then EOF, and the connection waits for the peer's EOF.
    peer.conn->close();
    run_until(
        loop, [&] { return peer.received.size() >= 8; }, "ERQ and EOF");
    CHECK(peer.received == bytes({0x03, 0x01, 0x02, 0x00, 0x03, 0x00, 0x02, 0x00}));
    run_for(loop, 30ms);
    CHECK(!peer.conn->ended());
    REQUIRE(!peer.raw->send(bytes({0x04, 0x00, 0x03, 0x00, 0x00})));  // EOF spelt with F bit 0
    run_until(
        loop, [&] { return peer.end.has_value() && peer.raw_end.has_value(); }, "the end");
    CHECK(!*peer.end);
}

TEST_CASE("the peer's EOF fails what is pending with 'connection ended', answers still go") {
    Loop loop;
    RawPeer peer(loop);
    std::optional<PacketResult> pending;
    peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    REQUIRE(!peer.raw->send(bytes({0x03, 0x00, 0x02, 0x00})));
    run_until(
        loop, [&] { return pending.has_value(); }, "pending fails");
    CHECK(pending->error == errc::pipe_ended);
    CHECK(mentions(pending->error, "connection ended"));
    // It answers with its own ERQ and EOF, then closes.
    run_until(
        loop, [&] { return peer.end.has_value(); }, "the end");
    CHECK(!*peer.end);
    run_until(
        loop, [&] { return peer.raw_end.has_value(); }, "closed");
    // The request (tag 2, 1 byte) went out first, then ERQ and EOF.
    CHECK(peer.received ==
          bytes({0x04, 0x02, 0x02, 0x01, 'x', 0x03, 0x01, 0x02, 0x00, 0x03, 0x00, 0x02, 0x00}));
}

TEST_CASE("bad input: malformed varint") {
    struct Case {
        std::string wire;
        std::string_view what;
    };
    const std::vector<Case> cases = {
        // A body that the varint it starts with does not fit in: each field cut inside a BSUInt.
        {bytes({0x01, 0x81}), "tag: BSUInt truncated"},
        {bytes({0x02, 0x05, 0x81}), "F: BSUInt truncated"},
        {bytes({0x03, 0x05, 0x03, 0x81}), "channel: BSUInt truncated"},
        {bytes({0x03, 0x05, 0x02, 0x81}), "rq_type: BSUInt truncated"},
        // An empty body has not even a tag.
        {bytes({0x00}), "tag: BSUInt missing"},
    };
    for (const Case& c : cases) expect_protocol_error(c.wire, c.what);
}

TEST_CASE("bad input: a varint over 64 bits") {
    SUBCASE("in a body") {
        std::string body = bytes({0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00});
        expect_protocol_error(bytes({static_cast<int>(body.size())}) + body,
                              "tag: BSUInt overflows 64 bits");
    }
    SUBCASE("as the length") {
        expect_protocol_error(
            bytes({0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00}),
            "overflows 64 bits");
    }
}

TEST_CASE("bad input: redundant 0x80 bytes are read up to 10 bytes; a longer varint is refused") {
    SUBCASE("10 bytes or fewer: accepted, as Python writes none but reads them") {
        Loop loop;
        RawPeer peer(loop);
        add_example_handlers(*peer.conn);
        std::optional<PacketResult> got;
        peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { got = std::move(r); });
        const std::string nine(9, '\x80');
        // The response to it (tag 2, ok, "hi"), with a 10-byte length and `80 02`, `80 04`.
        const std::string response = nine + bytes({0x06, 0x80, 0x02, 0x80, 0x04, 'h', 'i'});
        // A request: length `80 11`, tag `80 05`, F `80 80 02`, wire rq_type 1 in 10 bytes,
        // "ab" for the echo.
        const std::string request =
            bytes({0x80, 0x11, 0x80, 0x05, 0x80, 0x80, 0x02}) + nine + bytes({0x01, 'a', 'b'});
        REQUIRE(!peer.raw->send(response + request));
        const std::string sent = bytes({0x04, 0x02, 0x02, 0x01, 'x'});
        const std::string echo = bytes({0x04, 0x05, 0x04, 'a', 'b'});
        run_until(
            loop,
            [&] { return got.has_value() && peer.received.size() >= sent.size() + echo.size(); },
            "the response and the echo");
        REQUIRE(got);
        CHECK((got->ok && got->payload == "hi"));
        CHECK(peer.received == sent + echo);
        CHECK(!peer.conn->ended());
    }
    const std::string ten(10, '\x80');
    SUBCASE("a length of 11 bytes") {
        expect_protocol_error(ten + bytes({0x03, 0x05, 0x02, 0x01}), "longer than 10 bytes");
    }
    SUBCASE("a tag of 11 bytes") {
        expect_protocol_error(bytes({0x0c}) + ten + bytes({0x02, 0x04}),
                              "tag: BSUInt longer than 10 bytes");
    }
    SUBCASE("an rq_type of 11 bytes") {
        expect_protocol_error(bytes({0x0d, 0x05, 0x02}) + ten + bytes({0x01}),
                              "rq_type: BSUInt longer than 10 bytes");
    }
}

TEST_CASE("bad input: a length over the maximum packet size is refused from the length alone") {
    PacketConf conf;
    conf.max_packet = 1000;
    // Claims 1001 bytes, sends 3: decided at once (the raw peer stays open), in the terms of
    // the packet layer.
    expect_protocol_error(bytes({0x87, 0x69, 0x00, 0x02, 0x01}), "PacketConf.max_packet (1000)",
                          conf);
    // The default maximum, 16 MiB: 2^40 claimed.
    expect_protocol_error(bytes({0xa0, 0x80, 0x80, 0x80, 0x80, 0x00}), "16777216");
    // 1 GiB claimed: nothing of that size, nor of the maximum, is ever allocated (the whole
    // exchange, connection setup included, is measured).
    reset_largest_allocation();
    expect_protocol_error(bytes({0x84, 0x80, 0x80, 0x80, 0x00, 0x05, 0x02, 0x01}), "16777216");
    MESSAGE("largest allocation: " << largest_allocation() << " bytes");
    CHECK(largest_allocation() < PacketConf{}.max_packet);
}

TEST_CASE("bad input: a response for no pending request is dropped and counted") {
    Loop loop;
    RawPeer peer(loop);
    std::optional<PacketResult> r;
    peer.conn->submit(0, 0, "", 0, [&](PacketResult& x) { r = std::move(x); });  // tag 2
    // OK responses for tag 3 (nobody waits) and for tag 2 on channel 5 (the tag of a request of
    // ours, on another channel).
    REQUIRE(!peer.raw->send(bytes({0x02, 0x03, 0x14, 0x03, 0x02, 0x05, 0x05})));
    run_until(
        loop, [&] { return peer.conn->stats().unmatched_responses == 2; }, "counted");
    CHECK(!r);
    CHECK(!peer.conn->ended());
    CHECK(peer.conn->stats().outstanding == 1);
    REQUIRE(!peer.raw->send(bytes({0x02, 0x02, 0x04})));  // its response (tag 2, channel 0)
    run_until(
        loop, [&] { return r.has_value(); }, "the connection still works");
    REQUIRE(r);
    CHECK(r->ok);
    CHECK(peer.conn->stats().responses_received == 1);
}

TEST_CASE("bad input: a request with a tag already in use ends the connection") {
    Loop loop;
    RawPeer peer(loop);
    std::vector<PacketResponder> held;
    peer.conn->handle(0, [&](PacketRequest& rq) -> HandlerResult {
        held.push_back(rq.defer());
        return {};
    });
    std::optional<PacketResult> pending;
    peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    // Tag 7 on channel 0 and tag 7 on channel 1 (another channel: no reuse), both deferred;
    // then tag 7 on channel 0 again, and a request after it that must reach no handler.
    REQUIRE(!peer.raw->send(bytes({0x04, 0x07, 0x02, 0x01, 'a', 0x05, 0x07, 0x03, 0x01, 0x01, 'b',
                                   0x04, 0x07, 0x02, 0x01, 'c', 0x04, 0x08, 0x02, 0x01, 'd'})));
    run_until(
        loop, [&] { return peer.end.has_value() && pending.has_value(); }, "protocol error");
    REQUIRE(peer.end);
    REQUIRE(pending);
    CHECK(*peer.end == errc::protocol_error);
    CHECK_MESSAGE(
        mentions(*peer.end, "the peer reused tag 7 on channel 0 while it was still in use"),
        peer.end->message);
    CHECK(pending->error == errc::protocol_error);
    CHECK(mentions(pending->error, "reused tag 7 on channel 0"));
    CHECK(held.size() == 2);
    CHECK(peer.conn->stats().requests_received == 2);
    CHECK(peer.conn->stats().refused == 0);
    // The deferred requests can no longer be answered.
    for (PacketResponder& h : held) {
        CHECK(!h.pending());
        CHECK(!h.answer(std::string("too late")));
    }
    run_until(
        loop, [&] { return peer.raw_end.has_value(); }, "the raw peer sees the close");
    CHECK(peer.received == bytes({0x04, 0x02, 0x02, 0x01, 'x'}));  // our request, nothing else
    held.clear();
    expect_freed(loop, peer.conn);
}

TEST_CASE("bad input: wire rq_type 0 that is neither EOF nor ERQ") {
    struct Case {
        std::string wire;
        std::string_view what;
    };
    const std::vector<Case> cases = {
        {bytes({0x03, 0x05, 0x02, 0x00}), "neither EOF nor ERQ: tag 5"},
        {bytes({0x04, 0x00, 0x02, 0x00, 'x'}), "neither EOF nor ERQ: a payload of 1 bytes"},
        {bytes({0x04, 0x01, 0x02, 0x00, 'x'}), "neither EOF nor ERQ: a payload of 1 bytes"},
        {bytes({0x03, 0x00, 0x06, 0x00}), "neither EOF nor ERQ: flags 1"},
        {bytes({0x04, 0x00, 0x03, 0x01, 0x00}), "neither EOF nor ERQ: channel 1"},
    };
    for (const Case& c : cases) expect_protocol_error(c.wire, c.what);
}

TEST_CASE("bad input: a truncated final packet") {
    Loop loop;
    RawPeer peer(loop);
    std::optional<PacketResult> pending;
    peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    // A whole unrelated response, then half a packet, then the end of the stream.
    REQUIRE(!peer.raw->send(bytes({0x02, 0x09, 0x04, 0x10, 0x02})));
    peer.raw->close();
    run_until(
        loop, [&] { return peer.end.has_value() && pending.has_value(); }, "the end");
    CHECK(*peer.end == errc::protocol_error);
    CHECK(mentions(*peer.end, "truncated final packet"));
    CHECK(mentions(*peer.end, "after 2 bytes"));  // the length 0x10 and one byte of the body
    CHECK(pending->error == errc::protocol_error);
    CHECK(mentions(pending->error, "truncated final packet"));
    CHECK(peer.conn->stats().unmatched_responses == 1);
}

TEST_CASE("bad input: the stream ends between packets without the peer's EOF") {
    Loop loop;
    RawPeer peer(loop);
    std::optional<PacketResult> pending;
    peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    REQUIRE(!peer.raw->send(bytes({0x02, 0x09, 0x04})));  // one whole (unmatched) response
    peer.raw->close();
    run_until(
        loop, [&] { return peer.end.has_value() && pending.has_value(); }, "the end");
    CHECK(*peer.end == errc::protocol_error);
    CHECK(mentions(*peer.end, "between packets without the peer's EOF"));
    CHECK_FALSE(mentions(*peer.end, "truncated"));
    CHECK(pending->error == errc::protocol_error);
}

TEST_CASE("bad input: garbage") {
    // Read as packets, text claims a length ('G': 71 bytes) longer than what follows; the end
    // of the stream makes it a truncated packet.
    expect_protocol_error("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "packet", {}, true);
    std::string noise;
    for (int i = 0; i < 64; ++i) noise.push_back(static_cast<char>(0x80 | (i * 37)));
    expect_protocol_error(noise, "longer than 10 bytes");
}

TEST_CASE("on demand: connect on first use; a failing connect ends the connection") {
    Loop loop;
    auto listener = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    PacketConnectionPtr server;
    listener->on_accept([&](Pipe&, const PipePtr& p) {
        server = must(PacketConnection::open(p), "open");
        add_example_handlers(*server);
    });
    int connects = 0;
    auto c = must(PacketConnection::on_demand(loop, [&](Loop& l) {
        ++connects;
        return Pipe::connect(l, listener->local_address());
    }));
    run_for(loop, 20ms);
    CHECK(connects == 0);
    CHECK(c->pipe() == nullptr);
    CHECK(call(loop, *c, 0, 0, "lazy").payload == "lazy");
    CHECK(call(loop, *c, 0, 0, "again").payload == "again");
    CHECK(connects == 1);
    std::optional<Error> end;
    c->on_end([&](PacketConnection&, const Error& e) { end = e; });
    c->close();
    run_until(
        loop, [&] { return end.has_value(); }, "orderly end");
    CHECK(!*end);

    auto bad = must(PacketConnection::on_demand(
        loop, [](Loop&) -> Result<PipePtr> { return Error(errc::invalid_address, "no such"); }));
    std::optional<PacketResult> r;
    bad->submit(0, 0, "", 0, [&](PacketResult& x) { r = std::move(x); });
    std::optional<Error> bad_end;
    bad->on_end([&](PacketConnection&, const Error& e) { bad_end = e; });
    run_until(
        loop, [&] { return r.has_value() && bad_end.has_value(); }, "failure");
    // The request fails with the connect function's own Error, code and message; so does the
    // end, and so does every later request.
    CHECK(r->error == errc::invalid_address);
    CHECK(r->error.message == "no such");
    CHECK(*bad_end == errc::invalid_address);
    CHECK(bad_end->message == "no such");
    CHECK(bad->ended());
    std::optional<PacketResult> later;
    bad->submit(0, 0, "", 0, [&](PacketResult& x) { later = std::move(x); });
    run_until(
        loop, [&] { return later.has_value(); }, "a later request");
    CHECK(later->error == errc::invalid_address);
    CHECK(later->error.message == "no such");

    // start() connects before any request: the request made after the failure gets it too.
    auto early = must(PacketConnection::on_demand(loop, [](Loop&) -> Result<PipePtr> {
        return Error(errc::connect_timeout, "connect to 192.0.2.1:9: timed out");
    }));
    early->start();
    std::optional<PacketResult> after_start;
    early->submit(0, 0, "", 0, [&](PacketResult& x) { after_start = std::move(x); });
    run_until(
        loop, [&] { return after_start.has_value(); }, "a request after start()");
    CHECK(after_start->error == errc::connect_timeout);
    CHECK(after_start->error.message == "connect to 192.0.2.1:9: timed out");

    // Never used: close ends it without connecting.
    int never = 0;
    auto unused = must(PacketConnection::on_demand(loop, [&](Loop&) -> Result<PipePtr> {
        ++never;
        return Error(errc::invalid_config, "unused");
    }));
    std::optional<Error> unused_end;
    unused->on_end([&](PacketConnection&, const Error& e) { unused_end = e; });
    unused->close();
    run_until(
        loop, [&] { return unused_end.has_value(); }, "end");
    CHECK(never == 0);
}

TEST_CASE("refusals at submit: flags too large, payload over max_packet; invalid conf") {
    Loop loop;
    PacketConf conf;
    conf.max_packet = 1024;
    Session s(loop, conf);
    PacketResult r = call(loop, *s.client, 0, std::uint64_t{1} << 62, "");
    CHECK(r.error == errc::invalid_config);
    r = call(loop, *s.client, 0, 0, std::string(2000, 'x'));
    CHECK(r.error == errc::message_too_large);
    // A response too large to send becomes a failure response saying so.
    s.server->handle(60, [](PacketRequest&) -> HandlerResult { return std::string(5000, 'y'); });
    r = call(loop, *s.client, 60, 0, "");
    CHECK(!r.error);
    CHECK(!r.ok);
    CHECK(mentions(Error({}, r.payload), "cannot be sent"));
    CHECK(call(loop, *s.client, 0, 0, "fine").payload == "fine");

    PacketConf bad;
    bad.max_packet = 0;
    CHECK(bad.validate() == errc::invalid_config);
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    CHECK(PacketConnection::open(server).error() == errc::wrong_pipe_kind);
    auto udp = must(Pipe::udp(loop, lo(Family::ipv4)), "udp");
    CHECK(PacketConnection::open(udp).error() == errc::wrong_pipe_kind);
}

TEST_CASE("the pipe's end fails everything pending; a close timeout bounds the wait") {
    Loop loop;
    {
        RawPeer peer(loop);
        std::optional<PacketResult> pending;
        peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
        run_until(
            loop, [&] { return !peer.received.empty(); }, "sent");
        peer.conn->pipe()->close();  // someone closes the pipe under the connection
        run_until(
            loop, [&] { return pending.has_value() && peer.end.has_value(); }, "fails");
        CHECK(pending->error == errc::pipe_ended);
        CHECK(mentions(pending->error, "connection ended"));
        CHECK(*peer.end == errc::pipe_ended);
    }
    {
        PacketConf conf;
        conf.close_timeout = 100ms;
        RawPeer peer(loop, conf);
        std::optional<PacketResult> pending;
        peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
        peer.conn->close();  // the raw peer never sends EOF
        run_until(
            loop, [&] { return pending.has_value() && peer.end.has_value(); }, "timeout");
        CHECK(pending->error == errc::close_timeout);
        CHECK(*peer.end == errc::close_timeout);
        CHECK(mentions(*peer.end, "no EOF from the peer"));
        CHECK(make_error_code(errc::close_timeout).message() == "close timed out");
    }
}

// ---- What one connection may make this side hold: each store a peer can grow has a bound.

TEST_CASE("bounds: the conf refuses zero for max_peer_requests and max_outstanding") {
    PacketConf conf;
    CHECK(!conf.validate());
    CHECK(conf.max_peer_requests == 1024);
    CHECK(conf.max_outstanding == 65536);
    CHECK(conf.max_abandoned == 1024);
    conf.max_peer_requests = 0;
    CHECK(conf.validate() == errc::invalid_config);
    CHECK(mentions(conf.validate(), "PacketConf.max_peer_requests"));
    conf = {};
    conf.max_outstanding = 0;
    CHECK(conf.validate() == errc::invalid_config);
    CHECK(mentions(conf.validate(), "PacketConf.max_outstanding"));
    conf = {};
    conf.max_abandoned = 0;  // remember none: valid
    CHECK(!conf.validate());

    Loop loop;
    auto listener = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    auto pipe = must(Pipe::connect(loop, listener->local_address()), "connect");
    PacketConf bad;
    bad.max_outstanding = 0;
    CHECK(PacketConnection::open(pipe, bad).error() == errc::invalid_config);
    CHECK(PacketConnection::on_demand(
              loop, [&](Loop& l) { return Pipe::connect(l, listener->local_address()); }, bad)
              .error() == errc::invalid_config);
}

TEST_CASE("bounds: a peer with more requests waiting for deferred answers than max_peer_requests") {
    Loop loop;
    PacketConf conf;
    conf.max_peer_requests = 3;
    RawPeer peer(loop, conf);
    std::vector<PacketResponder> held;
    peer.conn->handle(0, [&](PacketRequest& rq) -> HandlerResult {
        held.push_back(rq.defer());
        return {};
    });
    std::optional<PacketResult> pending;
    peer.conn->submit(5, 0, "x", 0, [&](PacketResult& r) { pending = std::move(r); });
    auto request = [](int tag) { return bytes({0x04, tag, 0x02, 0x01, 'r'}); };
    // Three waiting: the bound, not past it.
    REQUIRE(!peer.raw->send(request(10) + request(11) + request(12)));
    run_until(
        loop, [&] { return held.size() == 3; }, "three deferred");
    CHECK(!peer.conn->ended());
    CHECK(peer.conn->stats().handlers_in_flight == 3);
    // An answer makes room for one more.
    REQUIRE(held[0].answer(std::string("done")));
    REQUIRE(!peer.raw->send(request(13)));
    run_until(
        loop, [&] { return held.size() == 4; }, "a fourth, after an answer");
    CHECK(!peer.conn->ended());
    // One more while three wait ends the connection, before its handler runs.
    REQUIRE(!peer.raw->send(request(14)));
    run_until(
        loop, [&] { return peer.end.has_value() && pending.has_value(); }, "the bound");
    CHECK(held.size() == 4);
    CHECK(*peer.end == errc::protocol_error);
    CHECK_MESSAGE(mentions(*peer.end, "PacketConf.max_peer_requests"), peer.end->message);
    CHECK_MESSAGE(mentions(*peer.end, "while 3 of its requests were waiting"), peer.end->message);
    CHECK(pending->error == errc::protocol_error);
    CHECK(mentions(pending->error, "PacketConf.max_peer_requests"));
    CHECK(peer.conn->stats().handlers_in_flight == 0);
    for (PacketResponder& h : held) CHECK(!h.pending());
    run_until(
        loop, [&] { return peer.raw_end.has_value(); }, "the raw peer sees the close");
    held.clear();
    expect_freed(loop, peer.conn);
}

TEST_CASE("bounds: a peer that never answers: max_outstanding refuses further submits") {
    Loop loop;
    PacketConf conf;
    conf.max_outstanding = 2;
    RawPeer peer(loop, conf);
    std::vector<PacketResult> results;
    auto record = [&](PacketResult& r) { results.push_back(std::move(r)); };
    const RequestId first = peer.conn->submit(0, 0, "a", 0, record);  // tag 2
    CHECK(peer.conn->submit(0, 0, "b", 0, record).valid);             // tag 3
    const RequestId third = peer.conn->submit(0, 0, "c", 0, record);
    CHECK(first.valid);
    CHECK(!third.valid);
    CHECK(results.empty());  // the refusal comes later, never inside submit()
    run_until(
        loop, [&] { return results.size() == 1; }, "the refusal");
    CHECK(results[0].error == errc::queue_full);
    CHECK_MESSAGE(mentions(results[0].error, "2 requests already wait for a response"),
                  results[0].error.message);
    CHECK(mentions(results[0].error, "PacketConf.max_outstanding"));
    CHECK(peer.conn->stats().outstanding == 2);
    CHECK(!peer.conn->ended());  // the connection itself is fine
    // Only requests still waiting count: a cancelled one makes room, so does an answer.
    CHECK(peer.conn->cancel(first));
    CHECK(peer.conn->submit(0, 0, "d", 0, record).valid);  // tag 4
    REQUIRE(!peer.raw->send(bytes({0x02, 0x03, 0x04})));   // answers tag 3
    run_until(
        loop, [&] { return results.size() == 3; }, "the answer");
    CHECK(peer.conn->submit(0, 0, "e", 0, record).valid);
    CHECK(peer.conn->stats().outstanding == 2);
    // What went out: a, b, d, e; never c.
    run_until(
        loop, [&] { return peer.received.size() >= 20; }, "four requests");
    CHECK(peer.received == bytes({0x04, 0x02, 0x02, 0x01, 'a', 0x04, 0x03, 0x02, 0x01, 'b',
                                  0x04, 0x04, 0x02, 0x01, 'd', 0x04, 0x05, 0x02, 0x01, 'e'}));
}

TEST_CASE("bounds: requests a peer never answers after their timeout: max_abandoned") {
    Loop loop;
    PacketConf conf;
    conf.max_abandoned = 2;
    conf.request_timeout = 20ms;
    RawPeer peer(loop, conf);
    int timeouts = 0;
    for (int i = 0; i < 5; ++i)  // tags 2 to 6
        peer.conn->submit(0, 0, "x", 0, [&](PacketResult& r) {
            CHECK(r.error == errc::request_timeout);
            ++timeouts;
        });
    run_until(
        loop, [&] { return timeouts == 5; }, "five timeouts");
    CHECK(peer.conn->stats().outstanding == 0);
    // Two are remembered, so their responses count as late; the other three were forgotten.
    REQUIRE(!peer.raw->send(bytes({0x02, 0x02, 0x04, 0x02, 0x03, 0x04, 0x02, 0x04, 0x04, 0x02, 0x05,
                                   0x04, 0x02, 0x06, 0x04})));
    run_until(
        loop,
        [&] {
            const PacketStats st = peer.conn->stats();
            return st.late_responses + st.unmatched_responses == 5;
        },
        "five responses");
    CHECK(peer.conn->stats().late_responses == 2);
    CHECK(peer.conn->stats().unmatched_responses == 3);
    CHECK(!peer.conn->ended());
    // Forgetting makes room again: the next timed-out request is remembered.
    std::optional<PacketResult> r;
    peer.conn->submit(0, 0, "y", 0, [&](PacketResult& x) { r = std::move(x); });  // tag 7
    run_until(
        loop, [&] { return r.has_value(); }, "another timeout");
    REQUIRE(!peer.raw->send(bytes({0x02, 0x07, 0x04})));
    run_until(
        loop, [&] { return peer.conn->stats().late_responses == 3; }, "counted as late");
    CHECK(peer.conn->stats().unmatched_responses == 3);
}

TEST_CASE("bounds: a peer that sends requests and never reads: the pipe's max_write_queue") {
    // The packet layer queues its responses nowhere but in the pipe: the pipe's cap bounds
    // them (its read backpressure is switched off, to reach the cap).
    Loop loop;
    NetConf nc;
    nc.read_backpressure = false;
    nc.high_watermark = 64 * 1024;
    nc.low_watermark = 16 * 1024;
    nc.max_write_queue = 256 * 1024;
    auto listener = must(Pipe::listen(loop, lo(Family::ipv4), nc), "listen");
    PacketConnectionPtr server;
    std::optional<Error> server_end;
    listener->on_accept([&](Pipe&, const PipePtr& p) {
        server = must(PacketConnection::open(p), "open accepted");
        server->handle(0, [](PacketRequest&) -> HandlerResult { return std::string(60000, 'z'); });
        server->on_end([&](PacketConnection&, const Error& e) { server_end = e; });
    });
    auto raw = must(Pipe::connect(loop, listener->local_address()), "connect");
    raw->pause();  // reads nothing: the responses pile up on the server's side
    // The same small request again and again (answered at once, so its tag is free again):
    // each asks for a response of 60000 bytes.
    std::string burst;
    for (int i = 0; i < 64; ++i) burst += bytes({0x04, 0x05, 0x02, 0x01, 'r'});
    const auto until = std::chrono::steady_clock::now() + kDeadline;
    while (!server_end && std::chrono::steady_clock::now() < until) {
        if (!raw->ended() && !raw->ending()) (void)raw->send(burst);
        run_for(loop, 5ms);
    }
    REQUIRE(server_end.has_value());
    CHECK(*server_end == errc::write_queue_full);
    CHECK_MESSAGE(mentions(*server_end, "NetConf.max_write_queue"), server_end->message);
}
