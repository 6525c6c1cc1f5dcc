// The loop's private state, shared by the platform and transport layers.
#pragma once

#include <pipeworks/loop.hpp>

#include <uv.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pipeworks::detail {

// Something with libuv handles on this loop that the Loop must close if it is destroyed first.
struct Resource {
    Resource* prev = nullptr;
    Resource* next = nullptr;
    // Closes the handles without running any user callback.
    virtual void shutdown_silently() = 0;

protected:
    ~Resource() = default;
};

// Work deferred to the end of the loop iteration (write gathering).
struct Flushable {
    bool flush_scheduled = false;
    virtual void flush() = 0;

protected:
    ~Flushable() = default;
};

// A read buffer. Reference-counted (loop thread only) so that a relay can keep the bytes it
// read for the write that forwards them instead of copying them; the loop then reads into
// another block.
struct ReadBlock {
    std::uint32_t refs = 1;
    std::size_t size = 0;
    char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
    bool holds(const char* p, std::size_t n) noexcept {
        return p >= data() && n <= size && p - data() <= static_cast<std::ptrdiff_t>(size - n);
    }
};

struct LoopCore {
    uv_loop_t own_loop{};
    uv_loop_t* loop = nullptr;
    bool owned = false;
    bool destroying = false;
    bool stop_requested = false;
    // The thread inside run*(), or none between runs (any one thread may then set up pipes).
    std::atomic<std::thread::id> running{};

    uv_async_t async{};
    std::mutex posted_mu;
    std::vector<std::function<void()>> posted;

    // Writes issued during an iteration are flushed after I/O callbacks (check) and after
    // timers (prepare), so several sends leave in one system call.
    uv_check_t check{};
    uv_prepare_t prepare{};
    std::vector<Flushable*> flush_list;
    std::vector<Flushable*> flushing;

    uv_timer_t run_timer{};

    // One read buffer for the whole loop: libuv reads synchronously into it and pipeworks
    // dispatches before the next read, so an idle pipe holds no buffer. When a relay keeps the
    // block for a write, the next read takes another one (a released block is kept for reuse).
    ReadBlock* read_block = nullptr;  // the loop holds one reference
    std::vector<ReadBlock*> spare_blocks;

    Resource* resources = nullptr;    // intrusive list of live resources
    std::size_t closing_handles = 0;  // uv_close calls whose callback has not run yet

    void add(Resource* r) noexcept {
        r->prev = nullptr;
        r->next = resources;
        if (resources) resources->prev = r;
        resources = r;
    }
    void remove(Resource* r) noexcept {
        if (r->prev)
            r->prev->next = r->next;
        else if (resources == r)
            resources = r->next;
        if (r->next) r->next->prev = r->prev;
        r->prev = r->next = nullptr;
    }

    void schedule_flush(Flushable* f);
    void cancel_flush(Flushable* f) noexcept;
    // The shared read buffer, at least `size` bytes. Inline: libuv asks for it before every read.
    char* read_buffer(std::size_t size) {
        if (read_block && read_block->refs == 1 && read_block->size >= size) [[likely]]
            return read_block->data();
        return new_read_block(size);
    }
    char* new_read_block(std::size_t size);
    static void retain(ReadBlock* b) noexcept { ++b->refs; }
    void release(ReadBlock* b) noexcept;
    void free_blocks() noexcept;
    bool in_loop_thread() const noexcept {
        auto r = running.load(std::memory_order_relaxed);
        return r == std::thread::id{} || r == std::this_thread::get_id();
    }
};

// uv_close with the loop's bookkeeping: Loop's destructor waits for these callbacks.
void close_handle(LoopCore& core, uv_handle_t* h, uv_close_cb cb);
void closed_handle(LoopCore& core) noexcept;

}  // namespace pipeworks::detail
