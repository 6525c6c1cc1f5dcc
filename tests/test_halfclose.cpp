// Half-close on stream pipes: a peer's FIN ends only the read side, shutdown() ends only the
// write side, and nothing send() accepted is lost on the way.
#include "pipe_support.hpp"

#include <pipeworks/pipeworks.hpp>

using namespace pipeworks;
using namespace pw_test;

namespace {

// The README's echo server: one message callback, no eof callback.
PipePtr echo_server(Loop& loop, Family f, const NetConf& conf = {}) {
    auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
    server->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    return server;
}

}  // namespace

TEST_CASE(
    "Half-close: an echo server returns every byte to a client that shut down, raw and "
    "framed, the client reading 1 s late") {
    for (Family f : kFamilies) {
        for (bool framed : {false, true}) {
            CAPTURE(family_name(f));
            CAPTURE(framed);
            Loop loop;
            NetConf conf;
            if (framed) conf.framer = Framer::message();
            auto server = echo_server(loop, f, conf);
            auto server_end = std::make_shared<Ends>();
            server->on_end([server_end](Pipe&, const EndInfo& e) {
                ++server_end->count;
                server_end->info = e;
            });
            auto client = must(Pipe::connect(loop, server->local_address(), conf), "connect");
            auto got = collect(*client);
            auto client_end = watch_end(*client);
            const std::string sent = payload(32 * 1024 * 1024, 7);
            if (framed) {
                for (std::size_t off = 0; off < sent.size(); off += 1024 * 1024)
                    REQUIRE(!client->send(std::string_view(sent).substr(off, 1024 * 1024)));
            } else {
                REQUIRE(!client->send(sent));
            }
            REQUIRE(!client->shutdown());
            CHECK(client->write_shut());
            CHECK(client->send("more").code == errc::pipe_ended);
            client->pause();
            run_for(loop, 1000ms);
            CHECK(client_end->count == 0);
            client->resume();
            run_until(
                loop, [&] { return client_end->count == 1; }, "client ends", 20000ms);
            CHECK(got->data.size() == sent.size());
            CHECK(got->data == sent);
            CHECK(client_end->info.reason == EndReason::peer_close);
            CHECK(client_end->info.unsent_bytes == 0);
            run_until(
                loop, [&] { return server_end->count == 1; }, "accepted pipe ends");
            CHECK(server_end->info.reason == EndReason::peer_close);
            CHECK(server_end->info.unsent_bytes == 0);
        }
    }
}

TEST_CASE("Half-close: with an eof callback the pipe stays writable after the peer's FIN") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::string request;
        bool finished_seen = false;
        server->on_message([&](Pipe&, const Message& m) { request += m.data; });
        server->on_eof([&](Pipe& p) {
            finished_seen = p.peer_finished();
            CHECK(p.is_up());
            // The answer comes after the whole request, as in a request/response over one
            // half-closed connection.
            CHECK(!p.send("got " + std::to_string(request.size()) + " bytes"));
            CHECK(!p.shutdown());
        });
        auto server_end = std::make_shared<Ends>();
        server->on_end([server_end](Pipe&, const EndInfo& e) {
            ++server_end->count;
            server_end->info = e;
        });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        auto got = collect(*client);
        auto client_end = watch_end(*client);
        REQUIRE(!client->send(payload(100000)));
        REQUIRE(!client->shutdown());
        run_until(
            loop, [&] { return client_end->count == 1 && server_end->count == 1; }, "both end");
        CHECK(finished_seen);
        CHECK(request == payload(100000));
        CHECK(got->data == "got 100000 bytes");
        CHECK(client_end->info.reason == EndReason::peer_close);
        CHECK(server_end->info.reason == EndReason::peer_close);
    }
}

TEST_CASE("Half-close: recv() waiters wake with status finished, and the pipe can still send") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto got = collect(*pair.accepted);
        pair.client->on_eof([](Pipe&) {});  // keep the pipe open after the FIN
        std::vector<RecvResult> results;
        pair.client->recv(all_messages, kDeadline,
                          [&](Pipe&, RecvResult& r) { results.push_back(r); });
        run_for(loop, 20ms);
        REQUIRE(!pair.accepted->shutdown());
        run_until(
            loop, [&] { return results.size() == 1; }, "waiter woken");
        CHECK(results[0].status == RecvResult::Status::finished);
        CHECK(pair.client->peer_finished());
        CHECK(pair.client->is_up());
        // Later recv() calls say the same while the pipe is open.
        pair.client->recv(all_messages, kDeadline,
                          [&](Pipe&, RecvResult& r) { results.push_back(r); });
        run_until(
            loop, [&] { return results.size() == 2; }, "second recv");
        CHECK(results[1].status == RecvResult::Status::finished);
        // The write side still works; then both directions are done and both pipes end.
        REQUIRE(!pair.client->send("late reply"));
        auto client_end = watch_end(*pair.client);
        auto accepted_end = watch_end(*pair.accepted);
        REQUIRE(!pair.client->shutdown());
        run_until(
            loop, [&] { return client_end->count == 1 && accepted_end->count == 1; }, "ends");
        CHECK(got->data == "late reply");
        CHECK(client_end->info.reason == EndReason::peer_close);
        CHECK(accepted_end->info.reason == EndReason::peer_close);
    }
}

TEST_CASE("Half-close: shutdown() contract") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Error e = pair.server->shutdown();
        CHECK(e.code == errc::wrong_pipe_kind);
        CHECK(mentions(e, "shutdown on tcp server"));
        auto u = must(Pipe::udp(loop, lo(f)), "udp");
        CHECK(u->shutdown().code == errc::wrong_pipe_kind);
        CHECK(!pair.client->shutdown());
        CHECK(!pair.client->shutdown());  // twice is harmless
        Error refused = pair.client->send("x");
        CHECK(refused.code == errc::pipe_ended);
        CHECK(mentions(refused, "shut down"));
        pair.client->close();
        run_until(
            loop, [&] { return pair.client->ended(); }, "client ended");
        CHECK(pair.client->shutdown().code == errc::pipe_ended);
    }
}

TEST_CASE("Half-close: a FIN while paused waits for the kept messages, which all arrive") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        std::vector<std::string> msgs;
        bool eof = false;
        server->on_message([&](Pipe& p, const Message& m) {
            msgs.emplace_back(m.data);
            p.pause();  // one message per resume()
        });
        server->on_eof([&](Pipe& p) {
            eof = true;
            CHECK(!p.shutdown());
        });
        auto client = must(Pipe::connect(loop, server->local_address(), conf), "connect");
        // Three frames in one write, then FIN: one read brings all of it.
        std::string wire;
        for (const char* m : {"one", "two", "three"}) REQUIRE(!encode(Framer::message(), m, wire));
        REQUIRE(!client->send_raw(wire));
        REQUIRE(!client->shutdown());
        run_until(
            loop, [&] { return msgs.size() == 1; }, "first message");
        run_for(loop, 100ms);  // the FIN has arrived meanwhile
        for (std::size_t n = 2; n <= 3; ++n) {
            CHECK_FALSE(eof);
            server->clients().at(0)->resume();
            run_until(
                loop, [&] { return msgs.size() == n; }, "next message");
        }
        server->clients().at(0)->resume();
        run_until(
            loop, [&] { return eof; }, "eof after the kept messages");
        CHECK(msgs == std::vector<std::string>{"one", "two", "three"});
    }
}
