// Framed pipes: NetConf::framer and Pipe::set_framer over real loopback sockets.
#include "support.hpp"

#include <string>
#include <vector>

using namespace pipeworks;
using namespace pw_test;

namespace {

NetConf framed(const Framer& f) {
    NetConf c;
    c.framer = f;
    return c;
}

std::string be32(std::uint32_t n) {
    std::string s(4, '\0');
    s[0] = static_cast<char>(n >> 24);
    s[1] = static_cast<char>(n >> 16);
    s[2] = static_cast<char>(n >> 8);
    s[3] = static_cast<char>(n);
    return s;
}

std::string frame(std::string_view payload) {
    return be32(static_cast<std::uint32_t>(payload.size())) + std::string(payload);
}

// A server that echoes every message (re-framed by its framer) and records what it received.
struct EchoServer {
    PipePtr pipe;
    std::vector<std::string> got;
    EchoServer(Loop& loop, Family f, const NetConf& conf) {
        pipe = must(Pipe::listen(loop, lo(f), conf), "listen");
        pipe->on_message([this](Pipe& p, const Message& m) {
            got.emplace_back(m.data);
            CHECK(!p.send(m.data));
        });
    }
};

}  // namespace

TEST_CASE("length framing: whole messages both ways over IPv4 and IPv6") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        EchoServer server(loop, f, framed(Framer::message()));
        auto client =
            must(Pipe::connect(loop, server.pipe->local_address(), framed(Framer::message())));
        std::vector<std::string> got;
        client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
        const std::vector<std::string> sent = {"one", "", std::string(70000, 'x'), "four"};
        for (const auto& m : sent) REQUIRE(!client->send(m));  // one write: many frames
        run_until(
            loop, [&] { return got.size() == sent.size(); }, "echoed messages");
        CHECK(got == sent);
        CHECK(server.got == sent);
        CHECK(client->stats().msgs_in == sent.size());
        CHECK(client->stats().msgs_out == sent.size());
        CHECK(client->framer().kind == FramerKind::length_field);
    }
}

TEST_CASE("length framing: frames split at every byte arrive whole") {
    Loop loop;
    EchoServer server(loop, Family::ipv4, framed(Framer::message()));
    auto raw = must(Pipe::connect(loop, server.pipe->local_address()));  // raw: sends bytes as is
    std::string echoed;
    raw->on_message([&](Pipe&, const Message& m) { echoed += m.data; });
    run_until(
        loop, [&] { return raw->is_up(); }, "connected");
    const std::string stream = frame("hello") + frame("") + frame("world!");
    // One byte per loop iteration, so the server reads the frames in many pieces.
    for (char c : stream) {
        REQUIRE(!raw->send(std::string_view(&c, 1)));
        loop.run_once();
    }
    run_until(
        loop, [&] { return echoed.size() == stream.size(); }, "echo");
    CHECK(echoed == stream);
    CHECK(server.got == std::vector<std::string>{"hello", "", "world!"});
}

TEST_CASE("a frame over max_message ends that pipe with a framing error; others keep working") {
    Loop loop;
    Framer fr = Framer::message();
    fr.max_message = 1024;
    EchoServer server(loop, Family::ipv4, framed(fr));
    std::optional<EndInfo> bad_end;
    server.pipe->on_accept([&](Pipe&, const PipePtr& c) {
        c->on_end([&](Pipe&, const EndInfo& e) {
            if (!bad_end && e.reason == EndReason::framing_error) bad_end = e;
        });
    });
    auto good = must(Pipe::connect(loop, server.pipe->local_address(), framed(fr)));
    auto bad = must(Pipe::connect(loop, server.pipe->local_address()));
    std::optional<EndInfo> bad_client_end;
    bad->on_end([&](Pipe&, const EndInfo& e) { bad_client_end = e; });
    std::string bad_echo;
    bad->on_message([&](Pipe&, const Message& m) { bad_echo += m.data; });
    // Claims 1 GiB: refused from the header alone, nothing of that size is allocated. The
    // message before it is still answered.
    REQUIRE(!bad->send(frame("ok") + be32(1u << 30) + "xyz"));
    run_until(
        loop, [&] { return bad_end.has_value(); }, "framing error end");
    REQUIRE(bad_end);
    CHECK(bad_end->error == errc::framing_error);
    CHECK(bad_end->error.message.find("1024") != std::string::npos);
    CHECK(std::string(to_string(EndReason::framing_error)) == "framing error");
    run_until(
        loop, [&] { return bad_client_end.has_value(); }, "bad client sees the close");

    std::string got;
    good->on_message([&](Pipe&, const Message& m) { got = m.data; });
    REQUIRE(!good->send(std::string(1024, 'k')));  // exactly the maximum
    run_until(
        loop, [&] { return got.size() == 1024; }, "the other client's echo");
    CHECK(good->send(std::string(1025, 'k')) == errc::message_too_large);
    CHECK(good->write_queue_bytes() == 0);  // nothing of the refused message was queued
    CHECK(good->is_up());
}

TEST_CASE("a stream that ends inside a frame ends with a framing error; between frames it is FIN") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(f == Family::ipv4 ? "IPv4" : "IPv6");
        for (bool cut : {true, false}) {
            CAPTURE(cut);
            Loop loop;
            auto server = must(Pipe::listen(loop, lo(f), framed(Framer::message())), "listen");
            std::vector<std::string> got;
            std::optional<EndInfo> end;
            server->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
            server->on_end([&](Pipe& p, const EndInfo& e) {
                if (p.kind() == PipeKind::tcp_accepted) end = e;
            });
            // A raw client writes the frames by hand, then closes (FIN).
            auto raw = must(Pipe::connect(loop, server->local_address()), "raw client");
            std::string bytes = frame("one") + frame("two");
            if (cut) bytes += frame("three").substr(0, 6);  // the length and 2 of 5 bytes
            REQUIRE(!raw->send(bytes));
            raw->close();
            run_until(
                loop, [&] { return end.has_value(); }, "the accepted pipe's end");
            CHECK(got == std::vector<std::string>{"one", "two"});  // the whole frames arrive
            if (cut) {
                CHECK(end->reason == EndReason::framing_error);
                CHECK(end->error == errc::framing_error);
                CHECK(end->error.message.find("ended inside a frame") != std::string::npos);
                CHECK(end->partial_frame_bytes == 6);
            } else {
                CHECK(end->reason == EndReason::peer_close);
                CHECK(!end->error);
                CHECK(end->partial_frame_bytes == 0);
            }
        }
    }
}

TEST_CASE("framed pipes: recv and subscriptions get whole messages") {
    Loop loop;
    EchoServer server(loop, Family::ipv6, framed(Framer::lines()));
    auto client = must(Pipe::connect(loop, server.pipe->local_address(), framed(Framer::lines())));
    auto sub = client->subscribe(Pattern::prefix("GET "));
    REQUIRE(!client->send("GET /a"));
    REQUIRE(!client->send("PUT /b"));
    REQUIRE(!client->send("GET /c"));
    std::vector<std::string> got;
    std::function<void()> next = [&] {
        client->recv(sub, 2s, [&](Pipe&, RecvResult& r) {
            REQUIRE(r.status == RecvResult::Status::message);
            got.push_back(r.message.data);
            if (got.size() < 2) next();
        });
    };
    next();
    run_until(
        loop, [&] { return got.size() == 2; }, "subscribed messages");
    CHECK(got == std::vector<std::string>{"GET /a", "GET /c"});
    // The implicit queue has all three, each whole, without the delimiter.
    run_until(
        loop, [&] { return client->queued() == 3; }, "implicit queue");
    CHECK(client->try_recv()->data == "GET /a");
    CHECK(client->try_recv()->data == "PUT /b");
    // A message that contains the delimiter cannot be framed: refused, nothing queued.
    Error e = client->send("two\nlines");
    CHECK(e == errc::invalid_config);
    CHECK(e.message.find("delimiter") != std::string::npos);
}

TEST_CASE("fixed-size framing") {
    Loop loop;
    EchoServer server(loop, Family::ipv4, framed(Framer::fixed(4)));
    auto client = must(Pipe::connect(loop, server.pipe->local_address(), framed(Framer::fixed(4))));
    std::vector<std::string> got;
    client->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    REQUIRE(!client->send("abcd"));
    REQUIRE(!client->send("efgh"));
    CHECK(client->send("toolong") == errc::invalid_config);
    run_until(
        loop, [&] { return got.size() == 2; }, "echo");
    CHECK(got == std::vector<std::string>{"abcd", "efgh"});
}

TEST_CASE("JSON-header framing: the tutorial's bytes in, the parsed header out") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), framed(Framer::json_header())));
    std::vector<std::string> types, contents;
    server->on_message([&](Pipe& p, const Message& m) {
        REQUIRE(m.json != nullptr);
        types.emplace_back(m.json->content_type);
        contents.emplace_back(m.data);
        CHECK(m.json->content_length == m.data.size());
        CHECK(!p.send(m.data));  // goes back as the tutorial's binary type
    });
    auto raw = must(Pipe::connect(loop, server->local_address()));
    std::string echoed;
    raw->on_message([&](Pipe&, const Message& m) { echoed += m.data; });
    // What the tutorial's client sends for a "search" request (json.dumps of its header).
    const std::string content = R"({"action": "search", "value": "ring"})";
    const std::string header = R"({"byteorder": "little", "content-type": "text/json", )"
                               R"("content-encoding": "utf-8", "content-length": )" +
                               std::to_string(content.size()) + "}";
    std::string wire;
    wire.push_back(static_cast<char>(header.size() >> 8));
    wire.push_back(static_cast<char>(header.size() & 0xff));
    REQUIRE(!raw->send(wire + header + content));
    run_until(
        loop, [&] { return contents.size() == 1; }, "json message");
    CHECK(types[0] == "text/json");
    CHECK(contents[0] == content);

    std::string expected;
    REQUIRE(!encode(Framer::json_header(), content, expected));
    run_until(
        loop, [&] { return echoed.size() == expected.size(); }, "echo");
    CHECK(echoed == expected);

    // Queued messages own their bytes and carry the header text.
    auto client = must(Pipe::connect(loop, server->local_address(), framed(Framer::json_header())));
    REQUIRE(!client->send("payload"));
    run_until(
        loop, [&] { return client->queued() == 1; }, "queued json message");
    auto r = client->try_recv();
    REQUIRE(r);
    CHECK(r->data == "payload");
    CHECK(r->json_header.find("\"content-type\": \"binary/custom-client-binary-type\"") !=
          std::string::npos);

    // A header that is not JSON is a framing error.
    std::optional<EndInfo> end;
    auto garbage = must(Pipe::connect(loop, server->local_address()));
    garbage->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    REQUIRE(!garbage->send(std::string("\x00\x05{oops", 7)));
    run_until(
        loop, [&] { return end.has_value(); }, "garbage closes the pipe");
}

TEST_CASE("UDP length framing: a datagram is a message; a mismatched one is dropped") {
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        Loop loop;
        auto server = must(Pipe::udp(loop, lo(f), {}, framed(Framer::message())));
        std::vector<std::string> got;
        server->on_message([&](Pipe& p, const Message& m) {
            got.emplace_back(m.data);
            CHECK(!p.send_to(m.data, m.from));  // framed on the way out
        });
        auto raw = must(Pipe::udp(loop, {}, server->local_address()));
        std::vector<std::string> echoed;
        raw->on_message([&](Pipe&, const Message& m) { echoed.emplace_back(m.data); });
        REQUIRE(!raw->send(be32(3) + "abc"));
        REQUIRE(!raw->send(be32(9) + "abc"));  // says 9, carries 3: dropped
        REQUIRE(!raw->send(be32(0)));
        run_until(
            loop, [&] { return echoed.size() == 2; }, "echoes");
        CHECK(got == std::vector<std::string>{"abc", ""});
        CHECK(echoed == std::vector<std::string>{be32(3) + "abc", be32(0)});
        run_until(
            loop, [&] { return server->stats().dropped == 1; }, "dropped datagram");
        CHECK(server->is_up());
    }
}

TEST_CASE("a framer that does not fit the transport is refused naming the field") {
    Loop loop;
    auto r = Pipe::udp(loop, lo(Family::ipv4), {}, framed(Framer::lines()));
    REQUIRE(!r);
    CHECK(r.error() == errc::invalid_config);
    CHECK(r.error().message.rfind("NetConf.framer", 0) == 0);

    Framer bad = Framer::message();
    bad.length.width = 3;
    auto t = Pipe::listen(loop, lo(Family::ipv4), framed(bad));
    REQUIRE(!t);
    CHECK(t.error().message.rfind("NetConf.framer.length.width", 0) == 0);

    auto u = must(Pipe::udp(loop, lo(Family::ipv4)));
    Error e = u->set_framer(Framer::fixed(8));
    CHECK(e == errc::invalid_config);
    CHECK(e.message.find("set_framer") != std::string::npos);
    CHECK(u->framer().kind == FramerKind::raw);  // unchanged
    u->close();
    run_until(
        loop, [&] { return u->ended(); }, "udp end");
    CHECK(u->set_framer(Framer::message()) == errc::pipe_ended);
}

TEST_CASE("pause inside a callback keeps the rest of the read; resume delivers it in order") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), framed(Framer::message())));
    PipePtr conn;
    std::vector<std::string> got;
    server->on_message([&](Pipe& p, const Message& m) {
        got.emplace_back(m.data);
        if (got.size() == 1) p.pause();  // the other messages of this read wait
    });
    server->on_accept([&](Pipe&, const PipePtr& c) { conn = c; });
    auto client = must(Pipe::connect(loop, server->local_address(), framed(Framer::message())));
    for (int i = 0; i < 10; ++i) REQUIRE(!client->send("m" + std::to_string(i)));
    run_until(
        loop, [&] { return got.size() == 1 && conn && conn->paused(); }, "first message");
    run_for(loop, 50ms);
    CHECK(got.size() == 1);
    conn->resume();
    run_until(
        loop, [&] { return got.size() == 10; }, "the rest");
    for (int i = 0; i < 10; ++i) CHECK(got[static_cast<std::size_t>(i)] == "m" + std::to_string(i));
}

TEST_CASE("set_framer inside a callback switches protocol mid-read") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4), framed(Framer::lines())));
    std::vector<std::string> got;
    server->on_message([&](Pipe& p, const Message& m) {
        got.emplace_back(m.data);
        if (m.data == "UPGRADE") CHECK(!p.set_framer(Framer::message()));
        if (m.data == "RAW") CHECK(!p.set_framer(Framer::raw()));
    });
    auto client = must(Pipe::connect(loop, server->local_address()));
    // The line, then frames, then a frame asking for raw and raw bytes: all in one write.
    REQUIRE(!client->send("UPGRADE\n" + frame("a\nb") + frame("") + frame("RAW") + "tail"));
    run_until(
        loop, [&] { return got.size() >= 5; }, "messages after the switches");
    REQUIRE(got.size() == 5);
    CHECK(got[0] == "UPGRADE");
    CHECK(got[1] == "a\nb");
    CHECK(got[2] == "");
    CHECK(got[3] == "RAW");
    CHECK(got[4] == "tail");
}

TEST_CASE("set_framer on a server applies to the pipes it accepts afterwards") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)));
    REQUIRE(!server->set_framer(Framer::message()));
    std::vector<std::string> got;
    server->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    auto client = must(Pipe::connect(loop, server->local_address()));
    REQUIRE(!client->send(frame("x") + frame("yz")));
    run_until(
        loop, [&] { return got.size() == 2; }, "framed messages");
    CHECK(got == std::vector<std::string>{"x", "yz"});
}

TEST_CASE("set_framer between reads decodes what arrives next") {
    Loop loop;
    auto server = must(Pipe::listen(loop, lo(Family::ipv4)));
    PipePtr conn;
    server->on_accept([&](Pipe&, const PipePtr& c) { conn = c; });
    std::vector<std::string> got;
    server->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    auto client = must(Pipe::connect(loop, server->local_address()));
    run_until(
        loop, [&] { return conn != nullptr; }, "accepted");
    REQUIRE(!conn->set_framer(Framer::delimited("\r\n")));
    REQUIRE(!client->send("a\r\nbc\r\n"));
    run_until(
        loop, [&] { return got.size() == 2; }, "lines");
    CHECK(got == std::vector<std::string>{"a", "bc"});
}
