// SyncPipeSide: a blocking pipe's loop half, over the pipe's own queue, recv and send.
#include "sync/pipe_side.hpp"

#include <pipeworks/loop.hpp>

#include <algorithm>
#include <utility>

namespace pipeworks::detail {
namespace {

// What one queued message costs the pipe's queue bound (NetConf::max_queue_bytes).
std::size_t cost(std::size_t bytes) {
    return bytes + queue_entry_overhead;
}

constexpr std::size_t kDefaultQueueBound = 1024 * 1024;

}  // namespace

std::shared_ptr<SyncPipeSide> SyncPipeSide::attach(const PipePtr& pipe) {
    auto side = std::make_shared<SyncPipeSide>();
    side->pipe = pipe;
    const NetConf& conf = pipe->conf();
    // Half the queue's own bound: one more read (up to reader_limit) still fits after a pause.
    side->pause_above = conf.max_queue_bytes != 0 ? conf.max_queue_bytes / 2 : kDefaultQueueBound;
    side->pause_count = conf.max_qsize != 0 ? std::max<std::size_t>(1, conf.max_qsize / 2) : 0;
    std::weak_ptr<SyncPipeSide> weak = side;
    // A subscription with a handler sees every message; with no message callback the pipe
    // still queues each one in its implicit subscription, which recv() takes from.
    pipe->subscribe(Pattern::any(), {}, [weak](Pipe& p, const Message& m) {
        auto s = weak.lock();
        if (!s) return;
        s->queued_bytes += cost(m.data.size());
        ++s->queued_count;
        if (!s->paused && (s->queued_bytes > s->pause_above ||
                           (s->pause_count != 0 && s->queued_count >= s->pause_count))) {
            s->paused = true;
            p.pause();
        }
    });
    pipe->on_drain([weak](Pipe&) {
        if (auto s = weak.lock()) s->unblock_sends();
    });
    // Keeps the pipe open for sending after the peer's FIN: recv() reports `finished`.
    pipe->on_eof([](Pipe&) {});
    pipe->on_end([weak](Pipe&, const EndInfo& e) {
        auto s = weak.lock();
        if (!s) return;
        s->unblock_sends();  // each is refused now, with the pipe's reason
        s->end.ended(e);
    });
    return side;
}

void SyncPipeSide::took(const Received& m) {
    queued_bytes -= std::min(queued_bytes, cost(m.data.size()));
    queued_count -= std::min<std::size_t>(queued_count, 1);
    if (paused && queued_bytes <= pause_above / 2 &&
        (pause_count == 0 || queued_count < std::max<std::size_t>(1, pause_count / 2))) {
        paused = false;
        pipe->resume();
    }
}

void SyncPipeSide::recv(std::chrono::milliseconds timeout, std::function<void(RecvResult)> done) {
    std::weak_ptr<SyncPipeSide> weak = weak_from_this();
    pipe->recv(all_messages, timeout, [weak, done = std::move(done)](Pipe&, RecvResult& r) {
        if (auto s = weak.lock(); s && r.status == RecvResult::Status::message) s->took(r.message);
        done(std::move(r));
    });
}

void SyncPipeSide::send(std::string bytes, std::chrono::milliseconds timeout,
                        std::function<void(Error)> done) {
    if (blocked.empty() && (pipe->writable() || pipe->ending() || pipe->ended())) {
        done(pipe->send(bytes));
        return;
    }
    const std::uint64_t id = next_send++;
    std::weak_ptr<SyncPipeSide> weak = weak_from_this();
    // Waits for on_drain; when the timeout passes first the bytes were never queued.
    auto bound = bounded<Error>(pipe->loop(), timeout, std::move(done), [weak, id, timeout] {
        if (auto s = weak.lock())
            std::erase_if(s->blocked, [id](const BlockedSend& b) { return b.id == id; });
        return sync_timeout_error("sync::Pipe::send (the write queue stayed full; nothing sent)",
                                  timeout);
    });
    blocked.push_back(BlockedSend{id, std::move(bytes), std::move(bound)});
}

void SyncPipeSide::unblock_sends() {
    while (!blocked.empty() && (pipe->writable() || pipe->ending() || pipe->ended())) {
        BlockedSend b = std::move(blocked.front());
        blocked.pop_front();
        b.done(pipe->send(b.bytes));
    }
}

Error end_error(const EndInfo& end, const char* what) {
    if (end.error) return end.error;
    return Error(errc::pipe_ended,
                 std::string(what) + ": the pipe ended (" + to_string(end.reason) + ")");
}

void await_up(Loop& loop, const PipePtr& pipe, std::chrono::milliseconds timeout, const char* what,
              std::function<void(Result<PipePtr>)> done) {
    std::weak_ptr<Pipe> weak = pipe;
    auto once = bounded<Result<PipePtr>>(loop, timeout, std::move(done), [weak, what, timeout] {
        if (auto p = weak.lock()) p->close();
        return Result<PipePtr>(sync_timeout_error(what, timeout));
    });
    pipe->on_up([once](Pipe& p) { once(p.shared_from_this()); });
    pipe->on_end([once, what](Pipe&, const EndInfo& e) { once(end_error(e, what)); });
}

}  // namespace pipeworks::detail
