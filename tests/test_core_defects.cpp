// Defects of the first core, each pinned by a test: completions inside the call that asked,
// subscriptions changed while a pipe ends, lingering closes, leaked descriptors, framer switches
// that reordered input, datagram limits, burst buffers, callbacks that throw, and the byte
// filter seam.
#include "child_process.hpp"
#include "pipe_support.hpp"
#include "transport/pipe_impl.hpp"

#include <pipeworks/pipeworks.hpp>

#include <dirent.h>

using namespace pipeworks;
using namespace pw_test;

namespace {

int open_fds() {
    int n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    REQUIRE(d != nullptr);
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
    return n;
}

}  // namespace

TEST_CASE("Core: a recv-handle-recv loop over 200,000 queued messages does not recurse") {
    Loop loop;
    NetConf conf;
    conf.framer = Framer::message();
    conf.max_queue_bytes = 0;
    auto pair = tcp_pair(loop, Family::ipv4, conf, conf);
    constexpr std::size_t kCount = 200000;
    std::string wire;
    for (std::size_t i = 0; i < kCount; ++i) REQUIRE(!encode(Framer::message(), "m", wire));
    REQUIRE(!pair.client->send_raw(wire));
    run_until(
        loop, [&] { return pair.accepted->queued() == kCount; }, "all queued");
    std::size_t got = 0;
    bool stop = false;
    std::function<void(Pipe&, RecvResult&)> next = [&](Pipe& p, RecvResult& r) {
        if (r.status != RecvResult::Status::message) {
            stop = true;
            return;
        }
        ++got;
        if (got < kCount) p.recv(all_messages, kDeadline, next);  // a later iteration
    };
    pair.accepted->recv(all_messages, kDeadline, next);
    CHECK(got == 0);  // never inside recv()
    run_until(
        loop, [&] { return got == kCount || stop; }, "every message", 30000ms);
    CHECK(got == kCount);
    CHECK_FALSE(stop);
}

TEST_CASE("Core: subscribe and unsubscribe inside recv handlers woken by the end") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto rx = must(Pipe::udp(loop, lo(f)), "udp");
        std::vector<SubId> subs;
        for (int i = 0; i < 8; ++i) subs.push_back(rx->subscribe(Pattern::any()));
        int woken = 0;
        for (SubId s : subs)
            rx->recv(s, kDeadline, [&](Pipe& p, RecvResult& r) {
                CHECK(r.status == RecvResult::Status::ended);
                ++woken;
                // Grows and shrinks the subscription list while the end walks it.
                for (int i = 0; i < 4; ++i) p.subscribe(Pattern::prefix("x"));
                for (SubId other : subs) p.unsubscribe(other);
            });
        run_for(loop, 20ms);
        auto end = watch_end(*rx);
        rx->close();
        run_until(
            loop, [&] { return end->count == 1; }, "ended");
        CHECK(woken == 8);
    }
}

TEST_CASE("Core: a lingering close never blocks the loop thread") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // A raw listener that accepts nothing and reads nothing: the bytes stay unsent.
        Fd listener(::socket(f == Family::ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0));
        Address l = lo(f);
        REQUIRE(::bind(listener.fd, l.sockaddr(), l.sockaddr_len()) == 0);
        REQUIRE(::listen(listener.fd, 4) == 0);
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        REQUIRE(::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
        NetConf conf;
        conf.linger = std::chrono::seconds(3);
        conf.close_timeout = 100ms;
        auto c = must(
            Pipe::connect(loop, Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)), conf),
            "connect");
        run_until(
            loop, [&] { return c->is_up(); }, "connected");
        REQUIRE(!c->send(payload(16 * 1024 * 1024)));
        auto end = watch_end(*c);
        const auto start = std::chrono::steady_clock::now();
        c->close();
        run_until(
            loop, [&] { return end->count == 1; }, "ended");
        // The lingering close (up to 3 s) runs off the loop thread.
        CHECK(std::chrono::steady_clock::now() - start < 1500ms);
        bool ticked = false;
        auto t0 = std::chrono::steady_clock::now();
        loop.call_later(10ms, [&] { ticked = true; });
        run_until(
            loop, [&] { return ticked; }, "timer");
        CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
    }
}

TEST_CASE("Core: linger and keepalive beyond what the OS takes are refused, not truncated") {
    NetConf c;
    c.linger = std::chrono::seconds(std::int64_t{1} << 32);
    Error e = c.validate(Transport::tcp);
    CHECK(e.code == errc::invalid_config);
    CHECK(mentions(e, "NetConf.linger"));
    NetConf k;
    k.keepalive = std::chrono::seconds(40000);
    Error ek = k.validate(Transport::tcp);
    CHECK(ek.code == errc::invalid_config);
    CHECK(mentions(ek, "NetConf.keepalive"));
    NetConf ok;
    ok.linger = std::chrono::seconds(30);
    ok.keepalive = std::chrono::seconds(32767);
    CHECK(!ok.validate(Transport::tcp));
}

TEST_CASE("Core: do_close = false leaks no descriptor when connect() fails at once") {
    Loop loop;
    NetConf conf;
    conf.do_close = false;
    // A TCP connect to a multicast group fails in the kernel before any packet leaves.
    const Address group = *Address::parse("224.0.0.1:9");
    CHECK_FALSE(Pipe::connect(loop, group, conf).ok());  // what libuv opens once, first
    const int before = open_fds();
    int refused = 0;
    for (int i = 0; i < 50; ++i)
        if (!Pipe::connect(loop, group, conf)) ++refused;
    run_for(loop, 20ms);
    CHECK(refused == 50);
    CHECK(open_fds() == before);
}

TEST_CASE("Core: framer switches outside a callback keep the byte stream in order") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        auto server = must(Pipe::listen(loop, lo(f), conf), "listen");
        std::vector<std::string> msgs;
        bool pause_once = true;
        server->on_message([&](Pipe& p, const Message& m) {
            msgs.emplace_back(m.data);
            if (pause_once) p.pause();
            pause_once = false;
        });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        std::string wire;
        REQUIRE(!encode(Framer::message(), "HELLO", wire));
        REQUIRE(!encode(Framer::message(), "WORLD", wire));
        REQUIRE(!client->send(wire));
        run_until(
            loop, [&] { return msgs.size() == 1; }, "first frame");
        auto accepted = server->clients().at(0);
        // framed -> raw -> framed before the next tick: the kept frame is still a frame.
        REQUIRE(!accepted->set_framer(Framer::raw()));
        REQUIRE(!accepted->set_framer(Framer::message()));
        accepted->resume();
        run_until(
            loop, [&] { return msgs.size() == 2; }, "second frame");
        CHECK(msgs == std::vector<std::string>{"HELLO", "WORLD"});

        // A frame cut short, kept while paused, then a switch to raw: the kept bytes come first,
        // then what arrives later, as one ordered stream.
        accepted->pause();
        std::string half;
        REQUIRE(!encode(Framer::message(), "HELLO", half));
        half.resize(6);  // the length field and "HE"
        msgs.clear();
        REQUIRE(!client->send(half));
        run_for(loop, 50ms);
        accepted->resume();
        run_for(loop, 50ms);
        CHECK(msgs.empty());  // half a frame: nothing to deliver
        REQUIRE(!accepted->set_framer(Framer::raw()));
        REQUIRE(!client->send("LLOWORLD"));
        std::string raw;
        run_until(
            loop,
            [&] {
                raw.clear();
                for (auto& m : msgs) raw += m;
                return raw.size() >= half.size() + 8;
            },
            "raw bytes");
        CHECK(raw == half + "LLOWORLD");
    }
}

TEST_CASE("Core: a datagram to an IPv4-mapped IPv6 address has IPv4's size limit") {
    Loop loop;
    auto u = must(Pipe::udp(loop, lo(Family::ipv6)), "udp");
    auto to = Address::parse("[::ffff:127.0.0.1]:9");
    REQUIRE(to.ok());
    Error e = u->send_to(std::string(65508, 'x'), *to);
    CHECK(e.code == errc::message_too_large);
    CHECK(mentions(e, "65507"));
}

TEST_CASE("Core: a pipe gives back a burst's write buffer once it has stayed drained") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        auto got = collect(*pair.accepted);
        REQUIRE(!pair.client->send(payload(2 * 1024 * 1024)));
        run_until(
            loop, [&] { return got->data.size() == 2 * 1024 * 1024; }, "burst arrives");
        run_until(
            loop, [&] { return pair.client->write_queue_bytes() == 0; }, "drained");
        auto& impl = detail::PipeImpl::of(*pair.client);
        const std::size_t keep = 4 * impl.conf_->reader_limit;
        // Kept while the stream might go on, given back within kReleaseDelayMs of the drain.
        const auto drained = std::chrono::steady_clock::now();
        run_until(
            loop,
            [&] {
                return impl.pending_.capacity() <= keep && impl.inflight_.capacity() <= keep &&
                       impl.filtered_.capacity() <= keep;
            },
            "buffers given back");
        CHECK(std::chrono::steady_clock::now() - drained < std::chrono::seconds(2));
    }
}

TEST_CASE("Core: a callback that throws ends its pipe; others go on") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)), "listen");
        server->on_message([](Pipe& p, const Message& m) {
            if (m.data == "boom") throw std::runtime_error("bad request");
            CHECK(!p.send(m.data));
        });
        auto bad = must(Pipe::connect(loop, server->local_address()), "bad client");
        auto good = must(Pipe::connect(loop, server->local_address()), "good client");
        auto good_got = collect(*good);
        auto server_ends = std::make_shared<std::vector<EndInfo>>();
        server->on_end([server_ends](Pipe&, const EndInfo& e) { server_ends->push_back(e); });
        auto bad_end = watch_end(*bad);
        REQUIRE(!bad->send("boom"));
        run_until(
            loop, [&] { return bad_end->count == 1; }, "bad client's pipe ends");
        REQUIRE(server_ends->size() == 1);
        CHECK(server_ends->at(0).reason == EndReason::error);
        CHECK(server_ends->at(0).error.code == errc::callback_threw);
        CHECK(mentions(server_ends->at(0).error, "bad request"));
        CHECK(mentions(server_ends->at(0).error, "message callback"));
        REQUIRE(!good->send("fine"));
        run_until(
            loop, [&] { return good_got->data == "fine"; }, "the good client is served");
        CHECK(server->is_up());

        // An end callback has no pipe left to end: the exception comes out of run*().
        auto u = must(Pipe::udp(loop, lo(f)), "udp");
        u->on_end([](Pipe&, const EndInfo&) { throw std::runtime_error("in end"); });
        u->close();
        CHECK_THROWS_WITH(run_for(loop, 200ms), "in end");
        run_for(loop, 20ms);  // the loop runs on
        CHECK(u->ended());
    }
}

TEST_CASE("Core: send_raw passes the framer; send_json sets the JSON header's content type") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf crlf;
        crlf.framer = Framer::delimited("\r\n");
        auto pair = tcp_pair(loop, f, {}, crlf);
        auto got = collect(*pair.accepted);
        const std::string request = "GET / HTTP/1.0\r\nHost: example\r\n\r\n";
        CHECK(pair.client->send(request).code == errc::invalid_config);  // holds the delimiter
        REQUIRE(!pair.client->send_raw(request));
        REQUIRE(!pair.client->send("tail"));
        run_until(
            loop, [&] { return got->data.size() == request.size() + 6; }, "raw bytes");
        CHECK(got->data == request + "tail\r\n");
        CHECK(pair.client->send_json("{}", "text/json", "utf-8").code == errc::invalid_config);

        NetConf json;
        json.framer = Framer::json_header();
        auto jp = tcp_pair(loop, f, json, json);
        std::string type, encoding, content;
        jp.accepted->on_message([&](Pipe&, const Message& m) {
            REQUIRE(m.json != nullptr);
            type = m.json->content_type;
            encoding = m.json->content_encoding;
            content = m.data;
        });
        REQUIRE(!jp.client->send_json(R"({"result": "ok"})", "text/json", "utf-8"));
        run_until(
            loop, [&] { return !content.empty(); }, "json message");
        CHECK(type == "text/json");
        CHECK(encoding == "utf-8");
        CHECK(content == R"({"result": "ok"})");
    }
}

TEST_CASE("Core: bytes pass the byte filter seam both ways (identity filter)") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        auto pair = tcp_pair(loop, f, conf, conf);
        detail::PipeImpl::of(*pair.client).filter_ = std::make_unique<detail::IdentityFilter>();
        detail::PipeImpl::of(*pair.accepted).filter_ = std::make_unique<detail::IdentityFilter>();
        pair.accepted->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
        auto got = collect(*pair.client);
        const std::string big = payload(3 * 1024 * 1024, 5);
        REQUIRE(!pair.client->send(big));
        for (int i = 0; i < 100; ++i) REQUIRE(!pair.client->send("m" + std::to_string(i)));
        run_until(
            loop, [&] { return got->msgs.size() == 101; }, "echoes through the filters");
        CHECK(got->msgs.front() == big);
        CHECK(got->msgs.back() == "m99");
    }
}

TEST_CASE("Core: the Python application-protocol client gets a JSON result from send_json") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf json;
        json.framer = Framer::json_header();
        auto server = must(Pipe::listen(loop, lo(f), json), "listen");
        std::string request;
        server->on_message([&](Pipe& p, const Message& m) {
            REQUIRE(m.json != nullptr);
            CHECK(m.json->content_type == "text/json");
            request = m.data;
            CHECK(!p.send_json(R"({"result": "Follow the white rabbit."})", "text/json", "utf-8"));
        });
        const Address at = server->local_address();
        // -B: the imported helper leaves no __pycache__ in the source tree.
        Child client({"/usr/bin/env", "python3", "-B",
                      PIPEWORKS_SOURCE_DIR "/tests/python/app_client.py", at.host(),
                      std::to_string(at.port()), "search", "morpheus"});
        CHECK(client.wait_exit(&loop) == 0);
        CAPTURE(client.err_text);
        CHECK(client.out_text == "got result: Follow the white rabbit.\n");
        CHECK(request == R"({"action": "search", "value": "morpheus"})");
    }
}
