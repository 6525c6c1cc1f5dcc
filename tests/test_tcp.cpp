// TCP pipes over loopback: byte streams arriving intact, statistics, pause/resume, graceful
// close, send errors and failed connects.
#include "pipe_support.hpp"

#include <uv.h>

using namespace pipeworks;
using namespace pw_test;

TEST_CASE("TCP: many small messages arrive in order, byte-exact, in both directions") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto at_server = collect(*pair.accepted);
        auto at_client = collect(*pair.client);

        std::string up, down;
        for (int i = 0; i < 2000; ++i) {
            std::string m = "up-" + std::to_string(i) + ";";
            up += m;
            REQUIRE(!pair.client->send(m));
            std::string r = "down-" + std::to_string(i * 7) + "|";
            down += r;
            REQUIRE(!pair.accepted->send(r));
        }
        run_until(
            loop, [&] { return at_server->data.size() >= up.size(); }, "client to server");
        run_until(
            loop, [&] { return at_client->data.size() >= down.size(); }, "server to client");
        CHECK(at_server->data == up);
        CHECK(at_client->data == down);
        for (const auto& a : at_server->from) CHECK(a == pair.client->local_address());
        for (const auto& a : at_client->from) CHECK(a == pair.server->local_address());
    }
}

TEST_CASE("TCP: a 1 MiB payload arrives intact and its echo comes back byte-exact") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::size_t echoed_in = 0;
        server->on_message([&](Pipe& p, const Message& m) {
            echoed_in += m.data.size();
            CHECK(!p.send(m.data));
        });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        auto got = collect(*client);
        const std::string big = payload(1024 * 1024, 7);
        REQUIRE(!client->send(big));  // queued while still connecting
        run_until(
            loop, [&] { return got->data.size() >= big.size(); }, "1 MiB echo");
        CHECK(echoed_in == big.size());
        REQUIRE(got->data.size() == big.size());
        CHECK(got->data == big);
        CHECK(got->msgs.size() > 1);  // a stream arrives in chunks, not as one message
        CHECK(client->stats().bytes_in == big.size());
        CHECK(client->stats().bytes_out == big.size());
        auto cl = server->clients();
        REQUIRE(cl.size() == 1);
        CHECK(cl[0]->stats().bytes_in == big.size());
        CHECK(cl[0]->stats().bytes_out == big.size());
    }
}

TEST_CASE("TCP: replies made from a read's own bytes keep their order through full buffers") {
    // An echo sends the bytes of the read it is handling; pipeworks writes them from the read
    // buffer when it can. Here the client stops reading, so the server's writes go partial and
    // stay in flight while more reads arrive; some replies add a second send.
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // The server must read on while its replies wait: its own backpressure is off.
        NetConf conf;
        conf.read_backpressure = false;
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        std::string expected;
        int n = 0;
        std::size_t max_queued_before = 0;
        bool close_after_reply = false;
        server->on_message([&](Pipe& p, const Message& m) {
            const std::size_t queued = p.write_queue_bytes();
            max_queued_before = std::max(max_queued_before, queued);
            CHECK(!p.send(m.data));
            expected += m.data;
            // While a write waits for the socket, replies are single: the first of them is
            // borrowed from the read buffer and must be copied when the read ends.
            if (++n % 3 == 0 && queued == 0) {
                CHECK(!p.send(m.data.substr(0, 1)));
                expected += m.data.substr(0, 1);
            }
            if (close_after_reply) p.close();  // graceful: the replies above still go out
        });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        auto got = collect(*client);
        bool ended = false;
        client->on_end([&](Pipe&, const EndInfo&) { ended = true; });
        client->pause();
        const std::string big = payload(16 * 1024 * 1024, 11);
        REQUIRE(!client->send(big));
        run_until(
            loop, [&] { return expected.size() >= big.size(); }, "server read everything");
        CHECK(max_queued_before > 0);  // some reads arrived while a write was waiting
        client->resume();
        run_until(
            loop, [&] { return got->data.size() >= expected.size(); }, "echo back");
        CHECK(got->data == expected);

        // A reply sent right before a close from the same handler arrives before the end.
        close_after_reply = true;
        const std::size_t before = expected.size();
        REQUIRE(!client->send("bye"));
        run_until(
            loop, [&] { return ended; }, "server closes");
        CHECK(got->data == expected);
        CHECK(got->data.substr(before, 3) == "bye");
    }
}

TEST_CASE("TCP: several large sends from both sides arrive intact") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto at_server = collect(*pair.accepted);
        auto at_client = collect(*pair.client);
        std::string up, down;
        for (std::uint32_t i = 0; i < 8; ++i) {
            auto a = payload(300 * 1024 + i * 1000, 100 + i);
            auto b = payload(200 * 1024 + i * 333, 200 + i);
            up += a;
            down += b;
            REQUIRE(!pair.client->send(a));
            REQUIRE(!pair.accepted->send(b));
        }
        run_until(
            loop,
            [&] {
                return at_server->data.size() >= up.size() && at_client->data.size() >= down.size();
            },
            "large transfers");
        CHECK(at_server->data == up);
        CHECK(at_client->data == down);
    }
}

TEST_CASE("TCP: stats count bytes and sends exactly, and report rates after traffic") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto before = pair.client->stats();
        CHECK(before.bytes_in == 0);
        CHECK(before.bytes_out == 0);
        CHECK(before.msgs_in == 0);
        CHECK(before.msgs_out == 0);
        CHECK(before.rate_out == 0);

        auto at_server = collect(*pair.accepted);
        std::size_t total = 0;
        for (int i = 1; i <= 10; ++i) {
            std::string m(static_cast<std::size_t>(i * 100), static_cast<char>('a' + i));
            total += m.size();
            REQUIRE(!pair.client->send(m));
        }
        std::string reply(777, 'r');
        REQUIRE(!pair.accepted->send(reply));
        REQUIRE(!pair.accepted->send(
            std::span<const std::byte>(reinterpret_cast<const std::byte*>(reply.data()), 23)));
        auto at_client = collect(*pair.client);
        run_until(
            loop, [&] { return at_server->data.size() == total && at_client->data.size() == 800; },
            "traffic");

        auto c = pair.client->stats();
        auto s = pair.accepted->stats();
        CHECK(c.bytes_out == total);
        CHECK(c.msgs_out == 10);
        CHECK(c.bytes_in == 800);
        CHECK(c.msgs_in == at_client->msgs.size());
        CHECK(s.bytes_in == total);
        CHECK(s.msgs_in == at_server->msgs.size());  // TCP: one message per chunk read
        CHECK(s.msgs_in >= 1);
        CHECK(s.msgs_in <= 10);
        CHECK(s.bytes_out == 800);
        CHECK(s.msgs_out == 2);
        CHECK(c.rate_out > 0);
        CHECK(c.rate_in > 0);
        CHECK(s.rate_in > 0);
        CHECK(s.rate_out > 0);
        CHECK(c.dropped == 0);
        CHECK(s.dropped == 0);
        CHECK(c.window.count() >= 0);
        CHECK(c.window.count() <= 5000);
        // The server itself moves no bytes.
        CHECK(pair.server->stats().bytes_in == 0);
        CHECK(pair.server->stats().bytes_out == 0);
    }
}

TEST_CASE("TCP: a paused pipe receives nothing until resumed, then gets all the data") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto got = collect(*pair.accepted);
        pair.accepted->pause();
        CHECK(pair.accepted->paused());
        const std::string data = payload(100 * 1024, 3);
        REQUIRE(!pair.client->send(data));
        REQUIRE(!pair.client->send("tail"));
        // The kernel takes the bytes (as many as the paused reader's window allows) and holds
        // them; none reach the paused pipe.
        run_for(loop, 200ms);
        CHECK(pair.client->write_queue_bytes() < data.size() + 4);
        CHECK(got->data.empty());
        CHECK(pair.accepted->stats().bytes_in == 0);

        // A paused pipe still sends.
        auto at_client = collect(*pair.client);
        REQUIRE(!pair.accepted->send("while paused"));
        run_until(
            loop, [&] { return at_client->data == "while paused"; }, "send while paused");

        pair.accepted->resume();
        CHECK_FALSE(pair.accepted->paused());
        run_until(
            loop, [&] { return got->data.size() >= data.size() + 4; }, "data after resume");
        CHECK(got->data == data + "tail");

        // pause() before the connection is made holds reading from the start.
        auto late = must(Pipe::connect(loop, pair.server->local_address()), "connect");
        late->pause();
        auto late_got = collect(*late);
        PipePtr late_accepted;
        pair.server->accept(kDeadline, [&](Pipe&, AcceptResult& r) { late_accepted = r.pipe; });
        run_until(
            loop, [&] { return late_accepted != nullptr && late->is_up(); }, "second client");
        REQUIRE(!late_accepted->send("early"));
        run_for(loop, 150ms);
        CHECK(late_got->data.empty());
        late->resume();
        run_until(
            loop, [&] { return late_got->data == "early"; }, "second client resumed");
    }
}

TEST_CASE("TCP: send(big) then close() at once still delivers every byte before the FIN") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto got = collect(*pair.accepted);
        auto server_end = watch_end(*pair.accepted);
        auto client_end = watch_end(*pair.client);
        const std::string big = payload(8 * 1024 * 1024, 11);
        REQUIRE(!pair.client->send(big));
        pair.client->close();
        CHECK(pair.client->ending());
        CHECK(pair.client->send("more") == errc::pipe_ended);
        run_until(
            loop, [&] { return server_end->count == 1 && client_end->count == 1; }, "both ends");
        CHECK(client_end->info.reason == EndReason::local_close);
        CHECK(server_end->info.reason == EndReason::peer_close);
        REQUIRE(got->data.size() == big.size());
        CHECK(got->data == big);
    }
}

TEST_CASE("TCP: send(big) and close() while still connecting still deliver every byte") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::string got;
        std::optional<EndInfo> server_side_end;
        server->on_message([&](Pipe&, const Message& m) { got += m.data; });
        server->on_end([&](Pipe&, const EndInfo& e) { server_side_end = e; });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        auto client_end = watch_end(*client);
        const std::string big = payload(1024 * 1024, 12);
        REQUIRE(!client->send(big));
        client->close();
        run_until(
            loop, [&] { return server_side_end.has_value() && client_end->count == 1; },
            "both ends");
        CHECK(client_end->info.reason == EndReason::local_close);
        REQUIRE(server_side_end.has_value());
        CHECK(server_side_end->reason == EndReason::peer_close);
        REQUIRE(got.size() == big.size());
        CHECK(got == big);
    }
}

TEST_CASE("TCP: close() while connecting to a refused port ends at once, as local_close") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        Address dead = closed_tcp_port(loop, f);
        NetConf conf;
        conf.con_timeout = 3000ms;  // also bounds how long a graceful close may wait
        auto client = must(Pipe::connect(loop, dead, conf), "connect");
        auto end = watch_end(*client);
        REQUIRE(!client->send("never delivered"));
        auto start = std::chrono::steady_clock::now();
        client->close();
        run_until(
            loop, [&] { return end->count == 1; }, "end");
        CHECK(std::chrono::steady_clock::now() - start < 1000ms);
        CHECK(end->info.reason == EndReason::local_close);
        run_for(loop, 50ms);
        CHECK(end->count == 1);
    }
}

TEST_CASE("TCP: sending on a server, or after the pipe ended, is refused with the right code") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);

        auto e = pair.server->send("x");
        CHECK(e == errc::wrong_pipe_kind);
        CHECK_FALSE(e.message.empty());
        CHECK(pair.server->send_to("x", pair.client->local_address()) == errc::wrong_pipe_kind);
        CHECK(pair.client->send_to("x", pair.server->local_address()) == errc::wrong_pipe_kind);

        // The peer goes away: the client sees the FIN, ends, and refuses further sends.
        auto client_end = watch_end(*pair.client);
        pair.accepted->close();
        run_until(
            loop, [&] { return client_end->count == 1; }, "client sees the peer close");
        CHECK(client_end->info.reason == EndReason::peer_close);
        CHECK_FALSE(client_end->info.error);
        auto after = pair.client->send("too late");
        CHECK(after == errc::pipe_ended);
        CHECK(after.code.category() == pipeworks_category());
        CHECK(pair.client->stats().bytes_out == 0);
        CHECK(pair.accepted->send("too late") == errc::pipe_ended);
        CHECK(pair.accepted->send(std::span<const std::byte>{}) == errc::pipe_ended);
    }
}

TEST_CASE("TCP: a send to a peer that reset the connection ends the writer with an error") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf reset;
        reset.linger = std::chrono::seconds(0);
        auto pair = tcp_pair(loop, f, reset);
        auto client_end = watch_end(*pair.client);
        // Keep the client from reading, so it learns of the reset only by writing.
        pair.client->pause();
        pair.accepted->close();
        run_until(
            loop, [&] { return pair.accepted->ended(); }, "reset sent");
        run_for(loop, 50ms);
        CHECK(client_end->count == 0);
        // The first write may still be accepted by the kernel; a later one meets the reset.
        Error first = pair.client->send("after reset");
        CHECK((!first || first == errc::pipe_ended));
        run_until(
            loop, [&] { return client_end->count == 1; }, "writer ends");
        CHECK(client_end->info.reason == EndReason::peer_reset);
        CHECK(client_end->info.error);
        CHECK(pair.client->send("again") == errc::pipe_ended);
    }
}

TEST_CASE("TCP: connect to a closed port ends with reason error and ECONNREFUSED") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        Address dead = closed_tcp_port(loop, f);
        auto client = must(Pipe::connect(loop, dead), "connect");
        auto end = watch_end(*client);
        int ups = 0;
        client->on_up([&](Pipe&) { ++ups; });
        CHECK(!client->send("queued"));
        run_until(
            loop, [&] { return end->count == 1; }, "refused connect ends");
        CHECK(ups == 0);
        CHECK(end->info.reason == EndReason::error);
        CHECK(end->info.error.code == std::error_code(UV_ECONNREFUSED, uv_category()));
        CHECK(end->info.error.code.category() == uv_category());
        CAPTURE(end->info.error.message);
        CHECK(end->info.error.message.find(dead.to_string()) != std::string::npos);
        CHECK_FALSE(client->is_up());
        CHECK(client->ended());
        REQUIRE(client->end_info().has_value());
        CHECK(client->end_info()->reason == EndReason::error);
        run_for(loop, 50ms);
        CHECK(end->count == 1);
    }
}

TEST_CASE("TCP: a connect that gets no answer ends with reason timeout after con_timeout") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        auto hole = blackhole_listener(f);
        REQUIRE_MESSAGE(hole.full, "the accept queue of the raw listener did not fill up");
        Loop loop;
        NetConf conf;
        conf.con_timeout = 300ms;
        auto start = std::chrono::steady_clock::now();
        auto client = must(Pipe::connect(loop, hole.address, conf), "connect");
        auto end = watch_end(*client);
        int ups = 0;
        client->on_up([&](Pipe&) { ++ups; });
        run_until(
            loop, [&] { return end->count == 1; }, "connect timeout");
        auto took = std::chrono::steady_clock::now() - start;
        CHECK(ups == 0);
        CHECK(end->info.reason == EndReason::timeout);
        CHECK(end->info.error == errc::connect_timeout);
        CHECK(end->info.error.message.find(hole.address.to_string()) != std::string::npos);
        CHECK(took >= 250ms);
        CHECK(took < 2000ms);
        CHECK(client->send("x") == errc::pipe_ended);
    }
}
