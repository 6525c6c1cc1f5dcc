// TagTable: the requests of one direction of a packet connection, by (channel, tag).
//
// An open-addressing hash table (linear probing, backward-shift deletion) in one vector, so
// that a connection with a steady number of requests in flight allocates nothing per request:
// a std::unordered_map would allocate a node for each. Not thread-safe; one per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace pipeworks::packet_detail {

template <class V>
class TagTable {
public:
    struct Entry {
        std::uint64_t channel = 0;
        std::uint64_t tag = 0;
        V value{};
    };

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

    V* find(std::uint64_t channel, std::uint64_t tag) noexcept {
        if (size_ == 0) return nullptr;
        for (std::size_t i = home(channel, tag);; i = (i + 1) & mask_) {
            Slot& s = slots_[i];
            if (!s.used) return nullptr;
            if (s.e.channel == channel && s.e.tag == tag) return &s.e.value;
        }
    }

    // Adds (channel, tag), which must not be in the table, and returns its value.
    V& insert(std::uint64_t channel, std::uint64_t tag, V value) {
        if ((size_ + 1) * 4 > slots_.size() * 3) grow();
        std::size_t i = home(channel, tag);
        while (slots_[i].used) i = (i + 1) & mask_;
        Slot& s = slots_[i];
        s.used = true;
        s.e.channel = channel;
        s.e.tag = tag;
        s.e.value = std::move(value);
        ++size_;
        return s.e.value;
    }

    bool erase(std::uint64_t channel, std::uint64_t tag) noexcept {
        if (size_ == 0) return false;
        std::size_t i = home(channel, tag);
        for (;; i = (i + 1) & mask_) {
            if (!slots_[i].used) return false;
            if (slots_[i].e.channel == channel && slots_[i].e.tag == tag) break;
        }
        // Backward shift: move each later entry of the probe run that may live at the hole.
        for (std::size_t j = (i + 1) & mask_; slots_[j].used; j = (j + 1) & mask_) {
            const std::size_t k = home(slots_[j].e.channel, slots_[j].e.tag);
            // The entry at j may move to i when its home is not cyclically within (i, j].
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) continue;
            slots_[i].e = std::move(slots_[j].e);
            i = j;
        }
        slots_[i].used = false;
        slots_[i].e = Entry{};
        --size_;
        return true;
    }

    // Empties the table, handing its entries over (in no particular order).
    std::vector<Entry> take_all() {
        std::vector<Entry> out;
        out.reserve(size_);
        for (Slot& s : slots_)
            if (s.used) {
                out.push_back(std::move(s.e));
                s.used = false;
                s.e = Entry{};
            }
        size_ = 0;
        return out;
    }

private:
    struct Slot {
        bool used = false;
        Entry e;
    };

    std::size_t home(std::uint64_t channel, std::uint64_t tag) const noexcept {
        // Tags are consecutive: a multiplicative mix spreads them and the channel.
        std::uint64_t h = (tag ^ (channel * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
        return static_cast<std::size_t>(h ^ (h >> 31)) & mask_;
    }

    void grow() {
        std::vector<Slot> old = std::move(slots_);
        slots_ = std::vector<Slot>(old.empty() ? 16 : old.size() * 2);
        mask_ = slots_.size() - 1;
        size_ = 0;
        for (Slot& s : old)
            if (s.used) insert(s.e.channel, s.e.tag, std::move(s.e.value));
    }

    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

}  // namespace pipeworks::packet_detail
