// The loop's private state, shared by the platform and transport layers.
#pragma once

#include <pipeworks/loop.hpp>

#include <uv.h>

#include <atomic>
#include <cstddef>
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
    // dispatches before the next read, so an idle pipe holds no buffer.
    std::unique_ptr<char[]> read_buf;
    std::size_t read_buf_size = 0;

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
        if (size > read_buf_size) [[unlikely]]
            grow_read_buffer(size);
        return read_buf.get();
    }
    void grow_read_buffer(std::size_t size);
    bool in_loop_thread() const noexcept {
        auto r = running.load(std::memory_order_relaxed);
        return r == std::thread::id{} || r == std::this_thread::get_id();
    }
};

// uv_close with the loop's bookkeeping: Loop's destructor waits for these callbacks.
void close_handle(LoopCore& core, uv_handle_t* h, uv_close_cb cb);
void closed_handle(LoopCore& core) noexcept;

}  // namespace pipeworks::detail
