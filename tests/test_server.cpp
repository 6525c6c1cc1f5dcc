// TCP servers: handing accepted pipes over (on_accept, accept, try_accept), their addresses,
// up events, copied callbacks and conf, clients(), and what a server's end does.
#include "pipe_support.hpp"

#include <map>

using namespace pipeworks;
using namespace pw_test;

namespace {

// Connects a client to `server` and waits until it is up and `handed()` holds (the server side
// saw it), so connections are accepted in the order this is called.
PipePtr connect_one(Loop& loop, Pipe& server, const std::function<bool()>& handed) {
    auto c = must(Pipe::connect(loop, server.local_address()), "connect");
    run_until(
        loop, [&] { return c->is_up() && handed(); }, "connection accepted");
    return c;
}

}  // namespace

TEST_CASE("Server: on_accept hands over pipes in accept order, each with its client's address") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        CHECK(server->kind() == PipeKind::tcp_server);
        CHECK(server->is_up());
        CHECK(server->local_address().same_host(lo(f)));
        CHECK(server->local_address().port() != 0);
        std::vector<PipePtr> accepted;
        server->on_accept([&](Pipe& s, const PipePtr& p) {
            CHECK(&s == server.get());
            REQUIRE(p);
            CHECK(p->is_up());
            accepted.push_back(p);
        });
        std::vector<PipePtr> clients;
        for (std::size_t i = 0; i < 4; ++i)
            clients.push_back(connect_one(loop, *server, [&] { return accepted.size() == i + 1; }));
        REQUIRE(accepted.size() == 4);
        for (std::size_t i = 0; i < 4; ++i) {
            CAPTURE(i);
            CHECK(accepted[i]->kind() == PipeKind::tcp_accepted);
            CHECK(accepted[i]->peer_address() == clients[i]->local_address());
            CHECK(accepted[i]->local_address() == server->local_address());
            CHECK(clients[i]->peer_address() == server->local_address());
            CHECK(clients[i]->kind() == PipeKind::tcp_client);
        }
        CHECK(server->clients() == accepted);
        // Pipes taken by a callback are not queued for accept() as well.
        CHECK_FALSE(server->try_accept().has_value());

        // Connections made all at once: the callback order is the accept order clients() keeps.
        std::vector<PipePtr> burst;
        for (int i = 0; i < 6; ++i)
            burst.push_back(must(Pipe::connect(loop, server->local_address()), "connect"));
        run_until(
            loop, [&] { return accepted.size() == 10; }, "burst accepted");
        CHECK(server->clients() == accepted);
        for (auto& c : burst) {
            int matches = 0;
            for (auto& a : accepted)
                if (a->peer_address() == c->local_address()) ++matches;
            CHECK(matches == 1);
        }
    }
}

TEST_CASE("Server: accept(timeout) and try_accept hand over queued pipes in accept order") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::vector<PipePtr> clients;
        for (std::size_t i = 0; i < 3; ++i)
            clients.push_back(
                connect_one(loop, *server, [&] { return server->clients().size() == i + 1; }));

        std::vector<PipePtr> got;
        for (int i = 0; i < 2; ++i) {
            bool called = false;
            server->accept(1000ms, [&](Pipe& s, AcceptResult& r) {
                CHECK(&s == server.get());
                CHECK(r.status == RecvResult::Status::message);
                CHECK(static_cast<bool>(r));
                got.push_back(r.pipe);
                called = true;
            });
            CHECK_FALSE(called);  // completions never run inside the call that asked
            run_until(
                loop, [&] { return called; }, "accept hands over a queued pipe");
        }
        auto third = server->try_accept();
        REQUIRE(third.has_value());
        got.push_back(*third);
        CHECK_FALSE(server->try_accept().has_value());
        REQUIRE(got.size() == 3);
        for (std::size_t i = 0; i < 3; ++i) {
            CAPTURE(i);
            REQUIRE(got[i]);
            CHECK(got[i]->peer_address() == clients[i]->local_address());
            CHECK(got[i]->kind() == PipeKind::tcp_accepted);
        }
        CHECK(server->clients() == got);

        // Waiters queued before the connections arrive are served first come, first served.
        std::vector<PipePtr> waited(2);
        server->accept(kDeadline, [&](Pipe&, AcceptResult& r) { waited[0] = r.pipe; });
        server->accept(kDeadline, [&](Pipe&, AcceptResult& r) { waited[1] = r.pipe; });
        auto c4 = connect_one(loop, *server, [&] { return waited[0] != nullptr; });
        CHECK(waited[1] == nullptr);
        auto c5 = connect_one(loop, *server, [&] { return waited[1] != nullptr; });
        CHECK(waited[0]->peer_address() == c4->local_address());
        CHECK(waited[1]->peer_address() == c5->local_address());
        CHECK_FALSE(server->try_accept().has_value());
    }
}

TEST_CASE("Server: accept(timeout) with no connection times out with status timeout") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::optional<AcceptResult> res;
        auto start = std::chrono::steady_clock::now();
        std::chrono::steady_clock::duration took{};
        server->accept(250ms, [&](Pipe&, AcceptResult& r) {
            took = std::chrono::steady_clock::now() - start;
            res = r;
        });
        run_until(
            loop, [&] { return res.has_value(); }, "accept timeout");
        REQUIRE(res.has_value());
        CHECK(res->status == RecvResult::Status::timeout);
        CHECK_FALSE(static_cast<bool>(*res));
        CHECK(res->pipe == nullptr);
        CHECK(took >= 200ms);
        CHECK(took < 2000ms);
        CHECK(server->is_up());

        // The default wait is conf().recv_timeout.
        NetConf conf;
        conf.recv_timeout = 150ms;
        auto s2 = must(Pipe::listen(loop, lo(f), conf), "listen");
        res.reset();
        start = std::chrono::steady_clock::now();
        s2->accept(std::nullopt, [&](Pipe&, AcceptResult& r) {
            took = std::chrono::steady_clock::now() - start;
            res = r;
        });
        run_until(
            loop, [&] { return res.has_value(); }, "default accept timeout");
        REQUIRE(res.has_value());
        CHECK(res->status == RecvResult::Status::timeout);
        CHECK(took >= 100ms);
        CHECK(took < 1500ms);
    }
}

TEST_CASE("Server: a waiting accept wakes with status ended when the server closes") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::vector<AcceptResult> results;
        server->accept(kDeadline, [&](Pipe&, AcceptResult& r) { results.push_back(r); });
        server->accept(std::nullopt, [&](Pipe&, AcceptResult& r) { results.push_back(r); });
        auto end = watch_end(*server);
        server->close();
        run_until(
            loop, [&] { return results.size() == 2 && end->count == 1; }, "waiters woken");
        for (auto& r : results) {
            CHECK(r.status == RecvResult::Status::ended);
            CHECK(r.pipe == nullptr);
            CHECK(r.end.reason == EndReason::local_close);
        }
        CHECK(end->info.reason == EndReason::local_close);
        // After the end, accept() answers on the next iteration with ended.
        std::optional<AcceptResult> late;
        server->accept(1000ms, [&](Pipe&, AcceptResult& r) { late = r; });
        CHECK_FALSE(late.has_value());
        run_until(
            loop, [&] { return late.has_value(); }, "accept after the end");
        REQUIRE(late.has_value());
        CHECK(late->status == RecvResult::Status::ended);

        // accept() on a pipe that is not a server says so.
        auto pair = tcp_pair(loop, f);
        std::optional<AcceptResult> wrong;
        pair.client->accept(100ms, [&](Pipe&, AcceptResult& r) { wrong = r; });
        run_until(
            loop, [&] { return wrong.has_value(); }, "accept on a client");
        REQUIRE(wrong.has_value());
        CHECK(wrong->status == RecvResult::Status::ended);
        CHECK(wrong->end.error == errc::wrong_pipe_kind);
        CHECK_FALSE(pair.client->try_accept().has_value());
    }
}

TEST_CASE("Server: up fires exactly once per connection, on the client and the accepted side") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::map<Pipe*, int> accepted_ups;
        server->on_up([&](Pipe& p) {
            CHECK(p.kind() == PipeKind::tcp_accepted);
            ++accepted_ups[&p];
        });
        std::vector<PipePtr> accepted;
        server->on_accept([&](Pipe&, const PipePtr& p) { accepted.push_back(p); });
        std::vector<PipePtr> clients;
        std::map<Pipe*, int> client_ups;
        for (int i = 0; i < 5; ++i) {
            clients.push_back(must(Pipe::connect(loop, server->local_address()), "connect"));
            clients.back()->on_up([&](Pipe& p) {
                CHECK(p.is_up());
                ++client_ups[&p];
            });
        }
        run_until(
            loop, [&] { return client_ups.size() == 5 && accepted_ups.size() == 5; }, "ups");
        run_for(loop, 100ms);
        CHECK(accepted_ups.size() == 5);
        CHECK(client_ups.size() == 5);
        for (auto& [p, n] : accepted_ups) CHECK(n == 1);
        for (auto& [p, n] : client_ups) CHECK(n == 1);
        CHECK(accepted_ups.count(server.get()) == 0);  // a server has no up of its own
        for (auto& a : accepted) CHECK(accepted_ups.count(a.get()) == 1);
    }
}

TEST_CASE("Server: accepted pipes get copies of the server's callbacks and conf") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_qsize = 3;
        conf.high_watermark = 123456;
        conf.low_watermark = 1234;
        conf.recv_timeout = 4321ms;
        conf.reader_limit = 4096;
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        std::map<Pipe*, std::string> seen;
        auto msg_id = server->on_message([&](Pipe& p, const Message& m) { seen[&p] += m.data; });
        std::map<Pipe*, int> ends;
        server->on_end([&](Pipe& p, const EndInfo&) { ++ends[&p]; });

        auto c1 = connect_one(loop, *server, [&] { return server->clients().size() == 1; });
        auto c2 = connect_one(loop, *server, [&] { return server->clients().size() == 2; });
        // A server with a message callback does not queue for accept(): take them from clients().
        CHECK_FALSE(server->try_accept());
        auto accepted = server->clients();
        REQUIRE(accepted.size() == 2);
        auto a1 = accepted[0];
        auto a2 = accepted[1];
        REQUIRE(a1->peer_address() == c1->local_address());
        REQUIRE(a2->peer_address() == c2->local_address());

        for (auto* a : {a1.get(), a2.get()}) {
            CHECK(a->conf().max_qsize == 3);
            CHECK(a->conf().high_watermark == 123456);
            CHECK(a->conf().low_watermark == 1234);
            CHECK(a->conf().recv_timeout == 4321ms);
            CHECK(a->conf().reader_limit == 4096);
            CHECK(a->conf().loop == &loop);
        }
        // The copies are the accepted pipes' own (shared until one changes): changing one
        // changes nothing elsewhere.
        REQUIRE(!a1->set_framer(Framer::lines()));
        CHECK(a1->conf().framer.kind == FramerKind::delimiter);
        CHECK(a2->conf().framer.kind == FramerKind::raw);
        CHECK(server->conf().framer.kind == FramerKind::raw);
        REQUIRE(!server->set_framer(Framer::message()));
        CHECK(a2->conf().framer.kind == FramerKind::raw);
        CHECK(a1->conf().framer.kind == FramerKind::delimiter);
        REQUIRE(!a1->set_framer(Framer::raw()));

        REQUIRE(!c1->send("one"));
        REQUIRE(!c2->send("two"));
        run_until(
            loop, [&] { return seen[a1.get()] == "one" && seen[a2.get()] == "two"; },
            "copied message callbacks");

        // The token works on each pipe, and removing it on a1 leaves a2 and the server alone.
        CHECK(a1->remove(msg_id));
        CHECK_FALSE(a1->remove(msg_id));
        REQUIRE(!c1->send("three"));
        REQUIRE(!c2->send("four"));
        // a1 now has no message callback, so its bytes queue on its implicit subscription.
        std::optional<Received> queued_on_a1;
        run_until(
            loop,
            [&] {
                if (!queued_on_a1) queued_on_a1 = a1->try_recv();
                return seen[a2.get()] == "twofour" && queued_on_a1.has_value();
            },
            "after removing from a1");
        CHECK(seen[a1.get()] == "one");
        CHECK(queued_on_a1->data == "three");
        CHECK(server->remove(msg_id));
        REQUIRE(!c2->send("five"));
        run_until(
            loop, [&] { return seen[a2.get()] == "twofourfive"; }, "a2 keeps its copy");

        // Callbacks added to the server later do not reach pipes it accepted before.
        int late = 0;
        server->on_message([&](Pipe&, const Message&) { ++late; });
        REQUIRE(!c2->send("six"));
        run_until(
            loop, [&] { return seen[a2.get()] == "twofourfivesix"; }, "six");
        CHECK(late == 0);

        // The copied end callback fires for the accepted pipe that ends, once.
        a1->close();
        run_until(
            loop, [&] { return a1->ended(); }, "a1 ends");
        CHECK(ends[a1.get()] == 1);
        CHECK(ends.count(a2.get()) == 0);
        CHECK(ends.count(server.get()) == 0);
    }
}

TEST_CASE("Server: clients() lists the open accepted pipes in accept order") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        CHECK(server->clients().empty());
        std::vector<PipePtr> accepted;
        server->on_accept([&](Pipe&, const PipePtr& p) { accepted.push_back(p); });
        std::vector<PipePtr> clients;
        for (std::size_t i = 0; i < 4; ++i)
            clients.push_back(connect_one(loop, *server, [&] { return accepted.size() == i + 1; }));
        CHECK(server->clients() == accepted);

        // A pipe closed here leaves the list once it has ended.
        accepted[1]->close();
        run_until(
            loop, [&] { return accepted[1]->ended(); }, "accepted[1] ends");
        CHECK(server->clients() == std::vector<PipePtr>{accepted[0], accepted[2], accepted[3]});

        // So does one whose client went away.
        clients[2]->close();
        run_until(
            loop, [&] { return accepted[2]->ended(); }, "accepted[2] ends");
        CHECK(accepted[2]->end_info()->reason == EndReason::peer_close);
        CHECK(server->clients() == std::vector<PipePtr>{accepted[0], accepted[3]});

        auto c5 = connect_one(loop, *server, [&] { return accepted.size() == 5; });
        CHECK(server->clients() == std::vector<PipePtr>{accepted[0], accepted[3], accepted[4]});
        CHECK(accepted[4]->peer_address() == c5->local_address());
        // Non-servers have no clients.
        CHECK(clients[0]->clients().empty());
        CHECK(accepted[0]->clients().empty());
    }
}

TEST_CASE("Server: closing the server ends every accepted pipe; their clients see peer_close") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        std::vector<PipePtr> accepted;
        server->on_accept([&](Pipe&, const PipePtr& p) { accepted.push_back(p); });
        std::vector<PipePtr> clients;
        for (std::size_t i = 0; i < 3; ++i)
            clients.push_back(connect_one(loop, *server, [&] { return accepted.size() == i + 1; }));
        std::vector<std::shared_ptr<Ends>> acc_ends, cli_ends;
        for (auto& a : accepted) acc_ends.push_back(watch_end(*a));
        for (auto& c : clients) cli_ends.push_back(watch_end(*c));
        auto server_end = watch_end(*server);

        bool done = false;
        server->close([&](Pipe& p) {
            CHECK(&p == server.get());
            CHECK(server_end->count == 1);
            done = true;
        });
        CHECK(server->ending());
        CHECK_FALSE(server->is_up());
        run_until(
            loop,
            [&] {
                bool all = done;
                for (auto& e : acc_ends) all = all && e->count == 1;
                for (auto& e : cli_ends) all = all && e->count == 1;
                return all;
            },
            "everything ends");
        CHECK(server_end->count == 1);
        CHECK(server_end->info.reason == EndReason::local_close);
        for (auto& e : acc_ends) {
            CHECK(e->count == 1);
            CHECK(e->info.reason == EndReason::local_close);
            CHECK_FALSE(e->info.error);
        }
        for (auto& e : cli_ends) {
            CHECK(e->count == 1);
            CHECK(e->info.reason == EndReason::peer_close);
        }
        CHECK(server->clients().empty());
        run_for(loop, 50ms);
        CHECK(server_end->count == 1);
        for (auto& e : acc_ends) CHECK(e->count == 1);

        // A new connect to the closed server's port is refused.
        auto late = must(Pipe::connect(loop, server->local_address()), "connect");
        auto late_end = watch_end(*late);
        run_until(
            loop, [&] { return late_end->count == 1; }, "late connect refused");
        CHECK(late_end->info.reason == EndReason::error);
    }
}

TEST_CASE("Server: pipes waiting in the accept queue end with the server") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        auto c1 = connect_one(loop, *server, [&] { return server->clients().size() == 1; });
        auto c1_end = watch_end(*c1);
        server->close();
        run_until(
            loop, [&] { return c1_end->count == 1 && server->ended(); }, "queued pipe ends");
        CHECK(c1_end->info.reason == EndReason::peer_close);
        // The queued pipe is gone from the queue (it ended without being taken).
        CHECK_FALSE(server->try_accept().has_value());
    }
}
