// Heap allocations of framed pipes in the steady state of an echo: a length-framed client and
// server in one process, counted by the replaced operator new of this executable (which also
// takes libpipeworks' allocations). Once warm, messages cost no allocation on either side:
// reads parse in place, callbacks get views, replies are framed into the pending write buffer.
#include "alloc_counter.hpp"
#include "support.hpp"

#include <string>

using namespace pipeworks;
using namespace pw_test;

namespace {

struct Echo {
    std::size_t echoed = 0;  // messages that came back to the client
    std::size_t target = 0;  // stop sending once this many were sent
    std::size_t sent = 0;
    std::size_t bad = 0;  // echoes that were not the message sent
};

// Runs `warm` then `measured` echoed messages with `inflight` in flight; returns the
// allocations counted during the measured part.
std::size_t allocations_per_run(Family family, std::size_t payload, std::size_t inflight,
                                std::size_t warm, std::size_t measured) {
    Loop loop;
    NetConf conf;
    conf.framer = Framer::message();
    auto server = must(Pipe::listen(loop, lo(family), conf), "listen");
    std::size_t send_errors = 0;
    server->on_message([&](Pipe& p, const Message& m) {
        if (p.send(m.data)) ++send_errors;
    });
    auto client = must(Pipe::connect(loop, server->local_address(), conf), "connect");
    const std::string message(payload, 'm');
    Echo e;
    client->on_message([&](Pipe& p, const Message& m) {
        if (m.data != message) ++e.bad;
        ++e.echoed;
        if (e.sent < e.target) {
            ++e.sent;
            if (p.send(message)) ++send_errors;
        }
    });
    auto start = [&](std::size_t more) {
        e.target += more;
        while (e.sent < e.target && e.sent - e.echoed < inflight) {
            ++e.sent;
            REQUIRE(!client->send(message));
        }
    };
    std::function<bool()> done = [&] { return e.echoed == e.target; };
    start(warm);
    run_until(loop, done, "warm-up echoes");
    const std::size_t before = allocations();
    start(measured);
    run_until(loop, done, "measured echoes");
    const std::size_t during = allocations() - before;
    CHECK(e.bad == 0);
    CHECK(send_errors == 0);
    CHECK(e.echoed == warm + measured);
    MESSAGE("family " << static_cast<int>(family) << ", " << payload << "-byte messages, "
                      << inflight << " in flight: " << during << " allocations over " << measured
                      << " echoed messages");
    return during;
}

}  // namespace

TEST_CASE("framed echo allocates nothing per message once warm") {
    // Whatever a run of the loop costs (its deadline timer) is a handful, whatever the count of
    // messages; per-message allocations would be thousands.
    constexpr std::size_t kMeasured = 20000;
    for (Family f : {Family::ipv4, Family::ipv6}) {
        CAPTURE(static_cast<int>(f));
        CHECK(allocations_per_run(f, 64, 1, 2000, kMeasured) <= 8);    // ping-pong
        CHECK(allocations_per_run(f, 64, 16, 2000, kMeasured) <= 8);   // pipelined
        CHECK(allocations_per_run(f, 1000, 4, 2000, kMeasured) <= 8);  // reads split frames
    }
}
