// A list of callbacks that tolerates additions and removals from inside its own callbacks.
#pragma once

#include <pipeworks/pipe.hpp>

#include <memory>
#include <utility>
#include <vector>

namespace pipeworks::detail {

template <class Fn>
class CallbackList {
public:
    CallbackList() = default;
    CallbackList(CallbackList&&) = default;
    CallbackList& operator=(CallbackList&&) = default;

    // A copy holds copies of the live callbacks (same tokens).
    CallbackList copy() const {
        CallbackList out;
        for (const auto& e : items_)
            if (e->id != 0) out.items_.push_back(std::make_unique<Entry>(*e));
        out.live_ = out.items_.size();
        return out;
    }

    void add(CallbackId id, Fn fn) {
        items_.push_back(std::make_unique<Entry>(Entry{id, std::move(fn)}));
        ++live_;
    }

    bool remove(CallbackId id) {
        if (id == 0) return false;  // 0 marks removed entries
        for (auto& e : items_) {
            if (e->id == id) {
                e->id = 0;  // the function may be running: destroy it only when not dispatching
                --live_;
                dirty_ = true;
                if (depth_ == 0) compact();
                return true;
            }
        }
        return false;
    }

    bool empty() const noexcept { return live_ == 0; }

    void clear() {
        for (auto& e : items_) e->id = 0;
        live_ = 0;
        dirty_ = true;
        if (depth_ == 0) compact();
    }

    // Calls every callback present when the call starts, unless stop() turns true. A callback
    // that throws stops the call; the exception passes on and the list stays consistent.
    template <class Stop, class... Args>
    void call(Stop&& stop, Args&&... args) {
        struct Depth {
            CallbackList& l;
            explicit Depth(CallbackList& list) : l(list) { ++l.depth_; }
            ~Depth() {
                if (--l.depth_ == 0 && l.dirty_) l.compact();
            }
        };
        if (items_.size() == 1 && !dirty_) {
            // The common case (one callback, nothing removed): no loop. A callback added or
            // removed during the call changes items_ or dirty_, handled as below.
            if (stop()) return;
            Depth d(*this);
            items_.front()->fn(args...);
            return;
        }
        Depth d(*this);
        // Entries live on the heap, so growing items_ during a callback does not move them.
        for (std::size_t i = 0, n = items_.size(); i < n; ++i) {
            if (stop()) break;
            Entry* e = items_[i].get();
            if (e->id != 0) e->fn(args...);
        }
    }

private:
    struct Entry {
        CallbackId id;
        Fn fn;
    };
    void compact() {
        std::erase_if(items_, [](const auto& e) { return e->id == 0; });
        dirty_ = false;
    }
    std::vector<std::unique_ptr<Entry>> items_;
    std::size_t live_ = 0;  // entries not removed
    unsigned depth_ = 0;
    bool dirty_ = false;
};

}  // namespace pipeworks::detail
