#include "support.hpp"

#include <atomic>
#include <thread>

using namespace pipeworks;
using namespace pw_test;

TEST_CASE("call_later fires once, in order of delay") {
    Loop loop;
    std::vector<int> order;
    loop.call_later(20ms, [&] { order.push_back(2); });
    loop.call_later(0ms, [&] { order.push_back(1); });
    run_until(
        loop, [&] { return order.size() == 2; }, "timers");
    CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("a cancelled timer never fires") {
    Loop loop;
    bool fired = false;
    Timer t = loop.call_later(10ms, [&] { fired = true; });
    CHECK(t.active());
    t.cancel();
    CHECK_FALSE(t.active());
    run_for(loop, 50ms);
    CHECK_FALSE(fired);
}

TEST_CASE("post is thread-safe and runs on the loop thread in order") {
    Loop loop;
    std::vector<int> got;
    std::thread::id loop_thread = std::this_thread::get_id();
    bool wrong_thread = false;
    std::thread producer([&] {
        for (int i = 0; i < 1000; ++i)
            loop.post([&, i] {
                if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
                got.push_back(i);
            });
    });
    run_until(
        loop, [&] { return got.size() == 1000; }, "posted functions");
    producer.join();
    CHECK_FALSE(wrong_thread);
    for (int i = 0; i < 1000; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("run returns when nothing is left, stop ends run") {
    Loop loop;
    CHECK(loop.run());
    loop.call_later(0ms, [&] { loop.stop(); });
    loop.call_later(60000ms, [] {});
    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(loop.run());
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("destroying a loop with open timers and pipes releases them silently") {
    bool fired = false;
    {
        Loop loop;
        loop.call_later(60000ms, [&] { fired = true; });
        auto server = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
        server->on_end([&](Pipe&, const EndInfo&) { fired = true; });
        auto client = must(Pipe::connect(loop, server->local_address()), "connect");
        run_until(
            loop, [&] { return client->is_up() && server->clients().size() == 1; }, "connection");
    }
    CHECK_FALSE(fired);
}

TEST_CASE("borrowed uv loop") {
    uv_loop_s* raw = nullptr;
    {
        Loop owner;
        raw = owner.native();
        Loop borrowed(raw);
        bool fired = false;
        borrowed.call_later(1ms, [&] { fired = true; });
        run_until(
            borrowed, [&] { return fired; }, "timer on borrowed loop");
    }
}
