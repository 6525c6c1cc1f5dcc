// Heap allocations of the packet layer in the steady state: echo requests with payloads that fit
// std::string's inline buffer, so that the only allocation a request could need (its response
// payload) is none. Once warm, a request costs no allocation on either side: the pending table,
// the send buffer and the pipe's write buffer are all reused.
#include "alloc_counter.hpp"
#include "support.hpp"

#include <pipeworks/packet.hpp>

using namespace pipeworks;
using namespace pw_test;

namespace {

std::size_t allocations() {
    return g_allocations.load(std::memory_order_relaxed);
}

// Runs `warm` then `measured` requests with `inflight` outstanding; returns the allocations
// counted during the measured part.
std::size_t allocations_per_run(std::size_t inflight, std::size_t warm, std::size_t measured,
                                std::uint64_t channel) {
    Loop loop;
    auto listener = must(Pipe::listen(loop, lo(Family::ipv4)), "listen");
    PacketConnectionPtr server;
    listener->on_accept([&](Pipe&, const PipePtr& p) {
        server = must(PacketConnection::open(p), "open");
        server->handle(0, [](PacketRequest& rq) -> HandlerResult {
            return PacketReply{rq.flags, std::string(rq.payload)};
        });
    });
    auto client =
        must(PacketConnection::open(must(Pipe::connect(loop, listener->local_address()))));
    struct Run {
        PacketConnection* client;
        std::uint64_t channel;
        std::size_t inflight, sent = 0, answered = 0, bad = 0, target = 0;
        const std::string payload = "8 bytes!";
        void send_more() {
            // The callback captures one pointer: it fits std::function's inline buffer.
            while (sent < target && sent - answered < inflight) {
                ++sent;
                client->submit(0, sent, payload, channel, [this](PacketResult& r) {
                    if (!r || r.payload != payload) ++bad;
                    ++answered;
                    send_more();
                });
            }
        }
    } run{client.get(), channel, inflight};
    run.target = warm;
    run.send_more();
    run_until(
        loop, [&] { return run.answered == run.target; }, "warm-up requests");
    const std::size_t before = allocations();
    run.target += measured;
    run.send_more();
    run_until(
        loop, [&] { return run.answered == run.target; }, "measured requests");
    const std::size_t during = allocations() - before;
    CHECK(run.bad == 0);
    MESSAGE(inflight << " in flight on channel " << channel << ": " << during
                     << " allocations over " << measured << " requests");
    return during;
}

}  // namespace

TEST_CASE("packet requests allocate nothing per request once warm") {
    constexpr std::size_t kMeasured = 2000;
    CHECK(allocations_per_run(1, 2000, kMeasured, 0) <= 8);   // ping-pong
    CHECK(allocations_per_run(16, 2000, kMeasured, 0) <= 8);  // pipelined
    CHECK(allocations_per_run(16, 2000, kMeasured, 9) <= 8);  // another channel
}
