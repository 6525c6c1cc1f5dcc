// FrameDecoder: splits the bytes a pipe receives into the messages of its Framer.
//
// Data path: each feed() gets a view into the caller's read buffer, which is reused once feed()
// returns. Whole frames are parsed in place and handed out as views into that buffer; only an
// incomplete tail is copied, into a carry buffer sized to the frame it completes (tails up to
// 64 bytes stay inside the decoder; a heap block is released as soon as the carry empties, so
// an idle decoder holds none). Steady state allocates nothing per message, except the
// json_header framer, which builds a JSON object per header.
//
// Threading: none of its own; one decoder belongs to one pipe and runs on its loop's thread.
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/framer.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

namespace pipeworks {

namespace detail {
// encode() for a framer already validated (a pipe's, checked when it opened): the per-message
// path skips the validation.
Error encode_valid(const Framer& framer, std::string_view payload, std::string& out);
}  // namespace detail

// One decoded frame. Every view is valid only during the callback that receives it.
struct Frame {
    std::string_view message;  // what the application receives: the body, or the whole frame
                               // when the framer keeps its header / delimiter
    std::string_view payload;  // the body alone: no header, no delimiter
    std::string_view frame;    // the whole frame as it was on the wire
    const JsonMessageHeader* json_header = nullptr;  // json_header framer: the parsed header
    const nlohmann::json* json = nullptr;            // json_header framer: the whole header object
};

// The bytes of a frame that did not arrive whole yet: inline while small, else on the heap.
class CarryBuffer {
public:
    static constexpr std::size_t kInline = 64;             // bytes kept without allocating
    static constexpr std::size_t kEagerLimit = 64 * 1024;  // see append()

    CarryBuffer() = default;
    CarryBuffer(CarryBuffer&&) noexcept = default;
    CarryBuffer& operator=(CarryBuffer&&) noexcept = default;

    std::string_view view() const noexcept { return {base() + begin_, end_ - begin_}; }
    std::size_t size() const noexcept { return end_ - begin_; }
    bool empty() const noexcept { return begin_ == end_; }
    // Heap bytes held (0 while the bytes fit inline).
    std::size_t heap_capacity() const noexcept { return heap_ ? cap_ : 0; }

    // Appends n bytes. `expected` is the size the frame being kept will reach, when known
    // (else 0): it bounds the growth.
    void append(const char* p, std::size_t n, std::size_t expected);
    // Drops the first n bytes.
    void consume(std::size_t n) noexcept;
    // Releases the heap block when empty; shrinks one far larger than what it holds.
    void trim();
    void clear() noexcept;

private:
    const char* base() const noexcept { return heap_ ? heap_.get() : inline_; }
    char* base() noexcept { return heap_ ? heap_.get() : inline_; }
    void reallocate(std::size_t capacity);

    std::unique_ptr<char[]> heap_;
    std::size_t cap_ = kInline;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    char inline_[kInline];
};

// What one feed() is: the next bytes of a stream (a frame may span feeds, and a feed may hold
// many), or one whole datagram (a frame per feed, nothing kept between them). The decoder needs
// only this, not which transport carries the bytes.
enum class FrameInput : std::uint8_t { stream, datagrams };

class FrameDecoder {
public:
    // A decoder for `framer` fed `input`. An invalid framer is not an assert: the first feed()
    // returns its validation error. With datagrams each feed() is one datagram.
    explicit FrameDecoder(const Framer& framer, FrameInput input = FrameInput::stream);
    ~FrameDecoder();
    FrameDecoder(FrameDecoder&&) noexcept;
    FrameDecoder& operator=(FrameDecoder&&) noexcept;
    FrameDecoder(const FrameDecoder&) = delete;
    FrameDecoder& operator=(const FrameDecoder&) = delete;

    // Decodes `data` (a read, or with datagrams one datagram), calling on_frame(const Frame&) for
    // each whole frame in order. on_frame may return bool: false pauses, and the decoder keeps the
    // rest (copied) until the next feed(); feed({}) delivers what it kept. on_frame must not
    // feed this decoder, and the decoder must outlive the call.
    // Returns an errc::framing_error (or the framer's validation error) when the bytes break
    // the framer; on a stream that error is final: every later feed() returns it until reset().
    // With datagrams an error concerns that datagram only.
    // raw: each non-empty feed is one message, never copied (an empty datagram is one too).
    template <class F>
    Error feed(std::string_view data, F&& on_frame) {
        using Fn = std::remove_reference_t<F>;
        return feed_impl(data, &FrameDecoder::call<Fn>,
                         const_cast<void*>(static_cast<const void*>(std::addressof(on_frame))));
    }

    // Bytes kept between feeds (an incomplete frame, or what a pause left).
    std::size_t buffered() const noexcept { return carry_.size(); }
    // Heap bytes the decoder holds for them (0 when idle).
    std::size_t heap_capacity() const noexcept { return carry_.heap_capacity(); }
    // Forgets kept bytes and any framing error.
    void reset();
    // Hands over the bytes kept between feeds and forgets them: a pipe that switches framers
    // decodes them with the next one.
    std::string take_buffered();
    // Puts `bytes` in front of what the next feed() brings, as a pause would have kept them
    // (feed({}) decodes them). Not for raw framers, which keep nothing.
    void prime(std::string_view bytes);

    const Framer& framer() const noexcept { return framer_; }

private:
    using Sink = bool (*)(void*, const Frame&);
    struct Step;

    template <class Fn>
    static bool call(void* fn, const Frame& frame) {
        auto& f = *static_cast<Fn*>(fn);
        if constexpr (std::is_void_v<std::invoke_result_t<Fn&, const Frame&>>) {
            f(frame);
            return true;
        } else {
            return static_cast<bool>(f(frame));
        }
    }

    Error feed_impl(std::string_view data, Sink sink, void* ctx);
    Error feed_counted(std::string_view data, Sink sink, void* ctx);
    Error feed_delimited(std::string_view data, Sink sink, void* ctx);
    Error feed_datagram(std::string_view data, Sink sink, void* ctx);

    Step parse(std::string_view in, Error& err);
    Step parse_length(std::string_view in, Error& err) const;
    Step parse_json(std::string_view in, Error& err);
    bool parse_json_header(std::string_view text, Error& err);
    std::size_t first_delimiter_end(std::string_view carry, std::string_view data) const;

    bool deliver(std::string_view frame, std::size_t body, std::size_t body_len, Sink sink,
                 void* ctx);
    void keep(std::string_view rest);
    Error fail(Error err);

    Framer framer_;
    FrameInput input_;
    Error error_;                // final framing error of a stream (or the framer's invalidity)
    CarryBuffer carry_;          // bytes of the frame that has not arrived whole
    std::size_t scan_from_ = 0;  // delimiter: where in carry_ a delimiter may still start
    bool json_ready_ = false;    // json_header: the header at the front is parsed
    std::unique_ptr<nlohmann::json> json_;  // json_header: the last header object
    JsonMessageHeader json_info_;           // json_header: views into json_ and the frame
};

}  // namespace pipeworks
