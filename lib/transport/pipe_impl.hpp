// The one implementation behind every Pipe.
#pragma once

#include <pipeworks/loop.hpp>
#include <pipeworks/pipe.hpp>

#include "message/frame_decoder.hpp"
#include "platform/loop_core.hpp"
#include "transport/callback_list.hpp"

#include <uv.h>

#include <array>
#include <deque>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace pipeworks::detail {

// Bytes per second over the last few seconds, in one-second buckets.
class RateWindow {
public:
    static constexpr unsigned kBuckets = 5;
    void add(std::uint64_t now_ms, std::uint64_t n) noexcept {
        // Most adds fall in the current second: skip the division.
        if (now_ms < cur_end_ms_) {
            bytes_[cur_] += n;
            return;
        }
        roll(now_ms, n);
    }
    double rate(std::uint64_t now_ms, std::uint64_t since_ms) const noexcept;

private:
    std::array<std::uint32_t, kBuckets> sec_{};
    std::array<std::uint64_t, kBuckets> bytes_{};
    std::uint64_t cur_end_ms_ = 0;  // end of the current bucket's second
    unsigned cur_ = 0;
    void roll(std::uint64_t now_ms, std::uint64_t n) noexcept;
};

struct RecvWaiter {
    std::uint64_t id;
    Pipe::RecvFn fn;
    Timer timer;
};

struct Subscription {
    SubId id;
    Pattern pattern;
    Address from;
    Pipe::MessageFn handler;
    std::deque<Received> queue;
    std::size_t bytes = 0;
    std::vector<RecvWaiter> waiters;
    bool removed = false;  // unsubscribed during a dispatch; erased after it
};

// Bytes queued for a write: a slice of a read block a relay kept (no copy), or owned bytes.
struct WriteSeg {
    ReadBlock* block = nullptr;  // null: the bytes are `owned`
    std::string owned;
    const char* p = nullptr;
    std::size_t n = 0;
};

struct AcceptWaiter {
    std::uint64_t id;
    Pipe::AcceptResultFn fn;
    Timer timer;
};

class PipeImpl final : public Pipe, public Resource, public Flushable {
public:
    PipeImpl(Loop& loop, PipeKind kind, const NetConf& conf);
    // Accepted pipes share their server's conf (an idle connection does not carry a copy).
    PipeImpl(Loop& loop, PipeKind kind, std::shared_ptr<NetConf> conf);
    ~PipeImpl();

    static PipeImpl& of(Pipe& p) { return static_cast<PipeImpl&>(p); }
    static const PipeImpl& of(const Pipe& p) { return static_cast<const PipeImpl&>(p); }

    // ---- opening helpers
    // A non-blocking socket of `type` with NetConf's reuse_addr (and broadcast on UDP), bound to
    // `local` unless it is empty. On error nothing is left open.
    Error bound_socket(int type, Family family, const Address& local, int& fd);
    Error open_tcp_socket(const Address& local, Family family, bool listening);
    Error start_connect(const Address& to);
    void start_resolve(std::string host, std::uint16_t port);
    Error start_listen();
    Error open_udp(const Address& local, const Address& dest);
    Error adopt_fd(int fd);
    void schedule_up();
    void finish_open_failure();

    // ---- events
    void on_connected(int status);
    void on_read(ssize_t nread, const uv_buf_t* buf);
    [[gnu::noinline]] void read_failed(int status);  // EOF or a read error
    void on_udp_read(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr, unsigned flags);
    void on_connection(int status);
    void on_write_done(int status);
    void deliver(std::string_view data, const Address& from,
                 const JsonMessageHeader* json = nullptr);
    // Framed pipes: decodes `data` (a read, or one datagram) and delivers each whole message.
    void feed_frames(std::string_view data, const Address& from);
    // Installs conf_->framer's decoder, carrying over what the old one kept undelivered.
    // Ends a stream pipe whose received bytes broke its framer (EndReason::framing_error).
    void end_framing(const std::string& what, std::size_t partial_frame_bytes = 0);
    void switch_decoder();
    // Delivers what a pause or a framer switch left undelivered (unless paused or ending).
    void deliver_kept();
    // Runs deliver_kept() on the next loop iteration when there is something kept: not inside
    // resume() or set_framer(), which may run inside a callback.
    void schedule_kept();
    // Appends `payload` as the framer frames it to `out`.
    Error frame_into(std::string_view payload, std::string& out);
    void enqueue(Subscription& sub, const Message& msg);
    // Out of line, so the raw path through deliver() stays small.
    [[gnu::noinline]] void dispatch_to_subs(const Message& msg);
    [[gnu::noinline]] bool seen_before(std::string_view data, const Address& from);
    void handle_accepted(const std::shared_ptr<PipeImpl>& client);

    // ---- sending
    Error send_bytes(std::string_view bytes);
    // send() on a pipe that is not an open TCP stream: the error, or the datagram for UDP.
    [[gnu::noinline]] Error send_not_stream(std::string_view bytes);
    [[gnu::noinline]] Error send_framed(std::string_view bytes);
    // Forwarded bytes that lie in `block` (a relay's read): written at once when nothing is
    // queued, else the block is kept for the write instead of copying the bytes.
    Error send_kept(std::string_view bytes, ReadBlock* block);
    Error send_check() const;  // why send() is refused now, if it is
    void flush_segs();
    void release_segs(std::vector<WriteSeg>& segs) noexcept;
    Error send_datagram(std::string_view bytes, const Address& to);
    void flush() override;
    // The part of flush() after a short or failed uv_try_write: uv_write the rest.
    [[gnu::noinline]] void write_rest(int n);
    void after_written();
    // Queued write bytes: pending, the unwritten part of the write in flight, datagrams.
    std::size_t queued_bytes() const noexcept {
        return pending_.size() + borrowed_.size() + segs_bytes_ +
               (write_in_flight_ ? h_.stream.write_queue_size : 0) + udp_queued_;
    }
    bool over_write_cap(std::size_t more) const noexcept {
        return conf_->max_write_queue != 0 && queued_bytes() + more > conf_->max_write_queue;
    }
    // Ends the pipe with errc::write_queue_full and returns that error.
    Error write_cap_error(std::size_t more);

    // ---- linking (relays)
    bool linked_to(const PipeImpl* target) const noexcept;
    bool is_partner(const PipeImpl* other) const noexcept {  // linked both ways
        return linked_to(other) && other->linked_to(this);
    }
    // Sends a message this pipe received down every linked pipe; false if this pipe ended.
    bool forward(std::string_view data);
    // Queued write bytes passed high_watermark: note it, and stop this pipe's feeders.
    void note_queued() {
        if (queued_bytes() < conf_->high_watermark) return;
        above_high_ = true;
        if (!throttling_ && !feeders_.empty()) set_throttle(true);
    }
    void set_throttle(bool on);
    void block_flow();
    void unblock_flow();
    // The peer sent FIN while this pipe is in a relay: pass it on, keep the other direction.
    void on_relay_fin();
    // Shuts the write side down once what is queued has gone out (a relayed half-close).
    void shutdown_write();
    void try_shutdown();
    // Ends the pipe (peer_close) once both directions are done.
    void maybe_finish();
    // The pipe is ending: drops its links, and passes the end on to its relay partners.
    void end_links();

    // ---- ending
    void fail(EndReason reason, Error error);
    void begin_close(bool graceful);
    void close_handle_now();
    void on_handle_closed();
    void shutdown_silently() override;
    void start_reading();
    void stop_reading();

    std::string describe() const;
    Error uv_fail(const char* op, int status, const Address& addr = {}) const;

    Loop* loop_;
    LoopCore* core_;
    PipeKind kind_;
    // Shared with the server's other accepted pipes; edit_conf() copies it before a change.
    std::shared_ptr<NetConf> conf_;
    NetConf& edit_conf() {
        if (conf_.use_count() > 1) conf_ = std::make_shared<NetConf>(*conf_);
        return *conf_;
    }
    std::shared_ptr<PipeImpl> self_;  // held while the handle is open

    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_udp_t udp;
    } h_;
    bool handle_inited_ = false;
    int kept_fd_ = -1;  // do_close == false: the fd that survives the pipe
    // An adopted UDP socket that was connect()ed: its sends to peer_ carry no address.
    bool udp_connected_ = false;

    Address local_, peer_;
    bool connected_ = false;  // TCP connected / UDP and server open
    bool reading_ = false;
    bool paused_ = false;
    bool ending_ = false;
    bool handle_closing_ = false;
    bool ended_ = false;
    bool above_high_ = false;
    bool close_after_flush_ = false;
    bool accept_pending_ = false;
    bool in_read_ = false;  // delivering this pipe's own read: its sends flush after it  // a
                            // paused server left a connection in the backlog
    EndInfo end_info_;
    std::vector<Pipe::ClosedFn> closed_fns_;

    CallbackId next_id_ = 1;
    CallbackList<MessageFn> message_cbs_;
    CallbackList<UpFn> up_cbs_;
    CallbackList<EndFn> end_cbs_;
    CallbackList<DrainFn> drain_cbs_;
    CallbackList<AcceptFn> accept_cbs_;

    // Subscriptions in creation order; the implicit one (all_messages) is made on first use,
    // so an idle pipe carries no queue.
    std::vector<std::unique_ptr<Subscription>> subs_;
    bool implicit_sub_ = false;  // this pipe has the implicit subscription
    Subscription* find_sub(SubId id);
    Subscription* implicit_sub();
    void erase_removed_subs();
    unsigned dispatch_depth_ = 0;
    bool subs_removed_ = false;  // some are marked removed, waiting for the dispatch to end
    SubId next_sub_ = 1;
    std::uint64_t next_waiter_ = 1;

    // TCP writes: `pending_` gathers sends until the flush; `inflight_` is under uv_write.
    std::string pending_;
    // Replies to the pipe's own read: a send of bytes that lie in the read's buffer (an echo)
    // is kept as a view and written from there by the flush at the end of on_read(), without a
    // copy into pending_. Only while pending_ and segs_ are empty; copied into pending_ by the
    // next send, by a partial write, or when on_read() returns unwritten. Empty outside
    // on_read().
    std::string_view read_data_;  // the bytes of the read being delivered
    std::string_view borrowed_;
    bool in_read_data(std::string_view b) const noexcept {
        auto p = reinterpret_cast<std::uintptr_t>(b.data());
        auto r = reinterpret_cast<std::uintptr_t>(read_data_.data());
        return p >= r && p + b.size() <= r + read_data_.size();
    }
    void unborrow();
    std::string inflight_;
    std::size_t inflight_off_ = 0;
    // Kept read blocks (relays) and owned bytes queued before pending_, in order; the ones
    // under the write in flight; the iovec for them.
    // (Vectors: an empty std::deque allocates, and most pipes never queue a segment.)
    std::vector<WriteSeg> segs_;
    std::size_t segs_bytes_ = 0;
    std::vector<WriteSeg> inflight_segs_;
    std::vector<uv_buf_t> iov_;
    bool write_in_flight_ = false;
    // Requests are made on first use, so an idle accepted pipe does not carry them.
    std::unique_ptr<uv_write_t> write_req_;
    std::unique_ptr<uv_connect_t> connect_req_;
    std::size_t udp_queued_ = 0;  // bytes in uv_udp_send requests
    Timer connect_timer_, close_timer_, up_timer_;

    // Servers
    std::unique_ptr<std::deque<std::shared_ptr<PipeImpl>>> accept_queue_;  // made on first use
    std::vector<AcceptWaiter> accept_waiters_;
    PipeImpl* server_ = nullptr;  // accepted pipes: the server, while both are open
    PipeImpl* first_client_ = nullptr;
    PipeImpl* last_client_ = nullptr;
    PipeImpl* client_prev_ = nullptr;
    PipeImpl* client_next_ = nullptr;

    // Framing (NetConf::framer). The decoder is made on the first read, so an idle pipe does not
    // carry it; raw pipes never have one.
    bool framed_ = false;  // conf_->framer is not raw
    std::unique_ptr<FrameDecoder> decoder_;
    bool feeding_ = false;        // decoder_->feed() is running
    bool framer_switch_ = false;  // set_framer() during a feed: switch when it returns
    std::string raw_kept_;        // switched to raw with bytes undelivered
    std::string frame_scratch_;   // UDP: the framed datagram being sent
    Timer kick_timer_;            // delivers kept messages after resume() / set_framer()

    // Linking. Plain pointers: a pipe drops its links (both sides) when it starts ending, and
    // at the latest when its handle closes.
    std::vector<PipeImpl*> links_;    // the pipes this one sends its messages to
    std::vector<PipeImpl*> feeders_;  // the pipes linked to this one
    unsigned flow_blocked_ = 0;       // feeding targets above their high watermark
    bool throttling_ = false;         // above high_watermark with feeders stopped
    bool read_eof_ = false;           // FIN received while in a relay
    bool shut_requested_ = false;     // write side to be shut down (relayed FIN)
    bool shut_issued_ = false;
    bool shut_done_ = false;
    std::unique_ptr<uv_shutdown_t> shutdown_req_;

    // Duplicate datagram suppression (enable_msg_ids)
    struct SeenIds {
        std::unordered_set<std::uint64_t> set;
        std::deque<std::uint64_t> order;
    };
    std::unique_ptr<SeenIds> seen_;

    // Stats
    std::uint64_t bytes_in_ = 0, bytes_out_ = 0, msgs_in_ = 0, msgs_out_ = 0, dropped_ = 0;
    std::uint64_t opened_ms_ = 0;
    RateWindow rate_in_, rate_out_;
};

}  // namespace pipeworks::detail
