// SyncPipeSide: the loop-thread half of a blocking pipe (flow control, blocked sends, its end).
#pragma once

#include <pipeworks/pipe.hpp>
#include <pipeworks/sync.hpp>

#include "sync/engine.hpp"

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pipeworks::detail {

// Loop-thread only. The pipe's callbacks hold it weakly; the user's half holds it strongly and
// hands its last reference to the loop when it goes.
struct SyncPipeSide : std::enable_shared_from_this<SyncPipeSide> {
    PipePtr pipe;
    // Flow control of the pipe's own queue: what the implicit subscription holds, counted as
    // Pipe::queued() costs it; reading pauses above pause_above and resumes at half of it.
    std::size_t queued_bytes = 0;
    std::size_t queued_count = 0;
    std::size_t pause_above = 0;
    std::size_t pause_count = 0;  // 0: no bound on the count
    bool paused = false;
    // Sends waiting for the write queue to drain below high_watermark, in call order.
    struct BlockedSend {
        std::uint64_t id;
        std::string bytes;
        std::function<void(Error)> done;
    };
    std::deque<BlockedSend> blocked;
    std::uint64_t next_send = 0;
    EndWatch<EndInfo> end;

    // Takes over an open (or connecting) pipe: its callbacks and flow control.
    static std::shared_ptr<SyncPipeSide> attach(const PipePtr& pipe);

    void send(std::string bytes, std::chrono::milliseconds timeout,
              std::function<void(Error)> done);
    void recv(std::chrono::milliseconds timeout, std::function<void(RecvResult)> done);
    void close() {
        if (pipe) pipe->close();
    }

private:
    void took(const Received& m);
    void unblock_sends();
};

// What a connect or an accept hands to the caller: the loop half and the addresses.
struct SyncOpened {
    std::shared_ptr<SyncPipeSide> side;
    Address local, peer;
};

// The user's half of a blocking pipe.
struct SyncPipeState : SyncHalf<SyncPipeSide> {
    using SyncHalf::SyncHalf;
};

// Loop side of connect: waits for `pipe` to come up (done gets its SyncOpened) or end (done
// gets the end's Error); when `timeout` passes first the pipe is closed and done gets
// errc::sync_timeout naming `what`.
void await_up(Loop& loop, const PipePtr& pipe, std::chrono::milliseconds timeout, const char* what,
              std::function<void(Result<PipePtr>)> done);
// An Error for an ended pipe: its own, or one saying how it ended.
Error end_error(const EndInfo& end, const char* what);

}  // namespace pipeworks::detail
