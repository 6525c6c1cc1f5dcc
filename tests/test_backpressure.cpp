// Backpressure: the write queue of a TCP pipe whose peer does not read, the watermarks,
// on_drain, the hard cap (max_write_queue), and a peer that resets during a large write.
#include "pipe_support.hpp"

using namespace pipeworks;
using namespace pw_test;

namespace {

constexpr std::size_t kChunk = 64 * 1024;

// Sends `total` bytes of payload in kChunk pieces; returns what was sent.
std::string send_lots(Pipe& p, std::size_t total, std::uint32_t seed) {
    std::string all = payload(total, seed);
    for (std::size_t off = 0; off < total; off += kChunk) {
        auto e = p.send(std::string_view(all).substr(off, kChunk));
        REQUIRE_MESSAGE(!e, e.message);
    }
    return all;
}

}  // namespace

TEST_CASE("Backpressure: the write queue grows while the peer does not read") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.high_watermark = 256 * 1024;
        conf.low_watermark = 64 * 1024;
        auto pair = tcp_pair(loop, f, {}, conf);
        auto got = collect(*pair.accepted);
        pair.accepted->pause();
        int drains = 0;
        std::size_t queue_at_drain = 0;
        bool writable_at_drain = false;
        pair.client->on_drain([&](Pipe& p) {
            ++drains;
            queue_at_drain = p.write_queue_bytes();
            writable_at_drain = p.writable();
        });
        CHECK(pair.client->write_queue_bytes() == 0);
        CHECK(pair.client->writable());

        // Far more than the kernel buffers of both sockets can hold.
        const std::size_t total = 24 * 1024 * 1024;
        std::string sent = send_lots(*pair.client, total / 2, 21);
        CHECK(pair.client->write_queue_bytes() >= conf.high_watermark);
        CHECK_FALSE(pair.client->writable());
        run_for(loop, 300ms);
        // The kernel took what it could; the rest stays queued in the pipe.
        std::size_t q1 = pair.client->write_queue_bytes();
        CHECK(q1 > conf.high_watermark);
        CHECK(q1 < total / 2);
        CHECK_FALSE(pair.client->writable());
        CHECK(got->data.empty());
        CHECK(drains == 0);

        // More sends while stuck add exactly their size to the queue.
        sent += send_lots(*pair.client, total / 2, 22);
        CHECK(pair.client->write_queue_bytes() == q1 + total / 2);
        run_for(loop, 200ms);
        std::size_t q2 = pair.client->write_queue_bytes();
        CHECK(q2 >= q1 + total / 2 - 1024 * 1024);  // at most a little more went out
        CHECK(drains == 0);
        CHECK(pair.client->stats().bytes_out == total);

        // The reader resumes: the queue drains, on_drain fires once at or below low_watermark.
        pair.accepted->resume();
        run_until(
            loop, [&] { return drains == 1; }, "drain");
        CHECK(queue_at_drain <= conf.low_watermark);
        CHECK(writable_at_drain);
        run_until(
            loop, [&] { return got->data.size() >= total; }, "everything received");
        CHECK(got->data.size() == total);
        CHECK(got->data == sent);
        CHECK(pair.client->write_queue_bytes() == 0);
        CHECK(pair.client->writable());
        run_for(loop, 50ms);
        CHECK(drains == 1);
    }
}

TEST_CASE("Backpressure: on_drain fires again on each pass above high_watermark") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.high_watermark = 128 * 1024;
        conf.low_watermark = 32 * 1024;
        auto pair = tcp_pair(loop, f, {}, conf);
        auto got = collect(*pair.accepted);
        int drains = 0;
        pair.client->on_drain([&](Pipe&) { ++drains; });
        // Below the high watermark: never "full", so no drain.
        REQUIRE(!pair.client->send(std::string(1000, 'a')));
        run_until(
            loop, [&] { return got->data.size() == 1000; }, "small send");
        run_for(loop, 20ms);
        CHECK(drains == 0);
        for (int round = 1; round <= 3; ++round) {
            CAPTURE(round);
            pair.accepted->pause();
            send_lots(*pair.client, 8 * 1024 * 1024, 30 + static_cast<std::uint32_t>(round));
            CHECK_FALSE(pair.client->writable());
            run_for(loop, 50ms);
            CHECK(drains == round - 1);
            pair.accepted->resume();
            run_until(
                loop, [&] { return drains == round; }, "drain");
        }
        run_until(
            loop, [&] { return got->data.size() == 1000 + 3 * 8 * 1024 * 1024; }, "all bytes");
    }
}

TEST_CASE("Backpressure: passing max_write_queue refuses the send and ends the pipe") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_write_queue = 4 * 1024 * 1024;
        auto pair = tcp_pair(loop, f, {}, conf);
        pair.accepted->pause();
        auto end = watch_end(*pair.client);
        auto peer_end = watch_end(*pair.accepted);
        std::string chunk = payload(256 * 1024, 40);
        Error refused;
        std::uint64_t accepted_bytes = 0;
        // Keep sending, letting the loop hand bytes to the kernel in between, until refused.
        for (int i = 0; i < 1000 && !refused; ++i) {
            refused = pair.client->send(chunk);
            if (!refused) {
                accepted_bytes += chunk.size();
                CHECK(pair.client->write_queue_bytes() <= conf.max_write_queue);
                if (i % 8 == 7) run_for(loop, 5ms);
            }
        }
        REQUIRE(refused);
        CHECK(refused == errc::write_queue_full);
        CAPTURE(refused.message);
        CHECK(refused.message.find("max_write_queue") != std::string::npos);
        // More than the cap went out in total: the kernel took part of it.
        CHECK(accepted_bytes > conf.max_write_queue);
        CHECK(pair.client->stats().bytes_out == accepted_bytes);
        CHECK(pair.client->send("x") == errc::pipe_ended);
        run_until(
            loop, [&] { return end->count == 1; }, "pipe ends");
        CHECK(end->info.reason == EndReason::error);
        CHECK(end->info.error == errc::write_queue_full);
        pair.accepted->resume();
        run_until(
            loop, [&] { return peer_end->count == 1; }, "peer sees the end");
        CHECK((peer_end->info.reason == EndReason::peer_close ||
               peer_end->info.reason == EndReason::peer_reset));
    }
}

TEST_CASE("Backpressure: a single send larger than max_write_queue is refused") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.max_write_queue = 64 * 1024;
        conf.high_watermark = 32 * 1024;  // the cap may not be below the high watermark
        conf.low_watermark = 8 * 1024;
        auto pair = tcp_pair(loop, f, {}, conf);
        auto end = watch_end(*pair.client);
        CHECK(pair.client->send(std::string(64 * 1024 + 1, 'z')) == errc::write_queue_full);
        CHECK(pair.client->stats().bytes_out == 0);
        run_until(
            loop, [&] { return end->count == 1; }, "pipe ends");
        CHECK(end->info.reason == EndReason::error);
        CHECK(end->info.error == errc::write_queue_full);
    }
}

TEST_CASE("Backpressure: a peer that resets during a large write does not kill the process") {
    // No SIGPIPE handler is installed here: the library must keep the signal from killing us.
    for (Family f : kFamilies) {
        for (bool writer_reads : {true, false}) {
            CAPTURE(family_name(f));
            CAPTURE(writer_reads);
            Loop loop;
            NetConf reset;
            reset.linger = std::chrono::seconds(0);
            auto pair = tcp_pair(loop, f, reset);
            pair.accepted->pause();
            // Without reading, the writer can learn of the reset only from a failing write.
            if (!writer_reads) pair.client->pause();
            auto end = watch_end(*pair.client);
            send_lots(*pair.client, 8 * 1024 * 1024, 50);
            run_for(loop, 100ms);
            REQUIRE(pair.client->write_queue_bytes() > 0);  // a write is in progress
            pair.accepted->close();
            run_until(
                loop, [&] { return end->count == 1; }, "writer ends");
            CAPTURE(end->info.error.message);
            CHECK((end->info.reason == EndReason::peer_reset ||
                   end->info.reason == EndReason::error));
            CHECK(end->info.error);
            // The process is still here, and the pipe refuses more bytes.
            CHECK(pair.client->send("x") == errc::pipe_ended);
        }
    }
}

TEST_CASE("Backpressure: writing after the peer closed ends the writer instead of the process") {
    // The peer closes in order (FIN) while the writer keeps writing: the first writes may
    // succeed, the peer answers them with a reset, and later writes fail with EPIPE.
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        pair.client->pause();  // keep the FIN unseen, so the writer goes on writing
        auto end = watch_end(*pair.client);
        pair.accepted->close();
        run_until(
            loop, [&] { return pair.accepted->ended(); }, "peer closed");
        for (int i = 0; i < 200 && end->count == 0; ++i) {
            if (pair.client->send(std::string(16 * 1024, 'w'))) break;
            run_for(loop, 5ms);
        }
        run_until(
            loop, [&] { return end->count == 1; }, "writer ends");
        CAPTURE(end->info.error.message);
        CHECK(end->info.reason == EndReason::peer_reset);
        CHECK(end->info.error);
    }
}
