// PipeImpl: the one implementation behind every Pipe, made of the transport's parts. The
// class holds their state in one allocation (an idle pipe is small); each part's code lives in
// a file of its own, named in the part's block below:
//   lifecycle.cpp    the state, the one end path, closing, the deadlines (idle, frame, close)
//   socket_io.cpp    opening sockets, the libuv handle, reading
//   connector.cpp    a name resolved (the loop's Resolver) for a TCP client or a UDP
//                    destination, and a TCP connect
//   happy_eyeballs.cpp  attempts on several addresses, the winner's socket; retries
//   server.cpp       listening, accepting, the connection limit
//   input_stage.cpp  every received byte not yet delivered; the framer's decoding
//   dispatcher.cpp   a message to links, callbacks, subscriptions, waiters; recv completions
//   write_queue.cpp  a stream's queued bytes and their one path to the socket; half-close
//   datagram.cpp     UDP sends
//   link.cpp         relays
//   tls_stage.cpp    TLS on a stream: the filter's setup, the handshake and its deadline,
//                    close_notify and truncation
// A message's walk: socket I/O -> byte filter -> input stage -> dispatcher; a send's walk:
// framer -> write queue -> byte filter -> socket I/O.
//
// Threading: bound to its loop's thread, like Pipe.
#pragma once

#include <pipeworks/loop.hpp>
#include <pipeworks/pipe.hpp>

#include "message/frame_decoder.hpp"
#include "platform/deadlines.hpp"
#include "platform/loop_core.hpp"
#include "transport/byte_filter.hpp"
#include "transport/callback_list.hpp"
#include "transport/rate_window.hpp"

#include <uv.h>

#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

namespace pipeworks::detail {

class TlsContext;
class TlsFilter;
enum class TlsRole : std::uint8_t;

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
    std::size_t bytes = 0;  // what the queue holds, entry overhead included (see entry_bytes)
    std::vector<RecvWaiter> waiters;
    bool removed = false;  // unsubscribed during a dispatch; erased after it
};

// What a queued message costs its subscription's byte bound.
inline std::size_t entry_bytes(const Received& r) noexcept {
    return r.data.size() + r.json_header.size() + queue_entry_overhead;
}

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

// The lifecycle. open: opening or open; draining: ending, queued bytes still going out
// (bounded by close_timeout); closing: uv_close called; ended: the end callbacks have run.
enum class Life : std::uint8_t { open, draining, closing, ended };

// How an end treats the bytes still queued.
enum class Drain : std::uint8_t {
    graceful,  // they go out first (within close_timeout), then the handle closes
    now,       // the handle closes at once; they are counted in EndInfo::unsent_bytes
};

class PipeImpl final : public Pipe, public Resource, public Flushable {
public:
    PipeImpl(Loop& loop, PipeKind kind, const NetConf& conf);
    // Accepted pipes share their server's conf (an idle connection does not carry a copy).
    PipeImpl(Loop& loop, PipeKind kind, std::shared_ptr<NetConf> conf);
    ~PipeImpl();

    static PipeImpl& of(Pipe& p) { return static_cast<PipeImpl&>(p); }
    static const PipeImpl& of(const Pipe& p) { return static_cast<const PipeImpl&>(p); }

    // ================================================================ lifecycle.cpp
    bool ending() const noexcept { return life_ >= Life::draining; }
    bool closing() const noexcept { return life_ >= Life::closing; }
    bool ended() const noexcept { return life_ == Life::ended; }
    // The one path that ends a pipe. The first call decides the reason; a later call with
    // Drain::now cuts a graceful end short (its bytes can no longer go out).
    void end(EndReason reason, Error error, Drain drain);
    // A failure: the end, without waiting for queued bytes.
    void fail(EndReason reason, Error error) { end(reason, std::move(error), Drain::now); }
    void close_handle_now();
    void on_handle_closed();
    void shutdown_silently() override;
    void drop_callbacks();
    // The pipe is open for traffic: arms its idle deadline.
    void opened();
    void touch() noexcept { last_activity_ms_ = uv_now(core_->loop); }
    static void idle_expired(Deadline& d);
    static void frame_expired(Deadline& d);
    // Runs a user callback; an exception from it ends the pipe (errc::callback_threw).
    template <class F>
    void guarded(const char* what, F&& f) {
        try {
            f();
        } catch (...) {
            callback_threw(what, std::current_exception());
        }
    }
    [[gnu::noinline]] void callback_threw(const char* what, std::exception_ptr e);
    std::string describe() const;
    Error uv_fail(const char* op, int status, const Address& addr = {}) const;

    Loop* loop_;
    LoopCore* core_;
    PipeKind kind_;
    Life life_ = Life::open;
    // Shared with the server's other accepted pipes; edit_conf() copies it before a change.
    std::shared_ptr<NetConf> conf_;
    NetConf& edit_conf() {
        if (conf_.use_count() > 1) conf_ = std::make_shared<NetConf>(*conf_);
        return *conf_;
    }
    std::shared_ptr<PipeImpl> self_;  // held while the handle is open
    EndInfo end_info_;
    std::vector<Pipe::ClosedFn> closed_fns_;
    Timer close_timer_;
    void close_timed_out();
    struct PipeDeadline : Deadline {
        PipeImpl* pipe = nullptr;
    };
    PipeDeadline idle_deadline_;
    PipeDeadline frame_deadline_;
    // A drained burst's buffers go back once the queue has stayed empty this long: a stream
    // that keeps the queue busy (a relay at full speed empties it between writes) reuses them.
    static constexpr std::uint64_t kReleaseDelayMs = 100;
    PipeDeadline release_deadline_;
    static void release_expired(Deadline& d);
    std::uint64_t last_activity_ms_ = 0;

    // ================================================================ socket_io.cpp
    // A non-blocking socket of `type` with NetConf's reuse_addr (and broadcast on UDP), bound to
    // `local` unless it is empty. On error nothing is left open.
    Error bound_socket(int type, Family family, const Address& local, int& fd);
    Error open_tcp_socket(const Address& local, Family family, bool listening);
    Error open_udp(const Address& local, const Address& dest);
    Error adopt_fd(int fd);
    void set_stream_options(uv_tcp_t* tcp);
    void schedule_up();
    void start_reading();
    void stop_reading();
    // Reading is wanted but held back: paused, a relay's backpressure, its own write queue.
    bool read_held() const noexcept {
        return paused_ || flow_blocked_ > 0 || self_throttled_ || read_eof_;
    }
    void on_read(ssize_t nread, const uv_buf_t* buf);
    [[gnu::noinline]] void read_failed(int status);  // EOF or a read error
    // The read side ended (FIN): delivers what is kept, then the end of input (a relay passes
    // it on; otherwise eof callbacks, or the default graceful end). Once.
    void finish_input();
    void on_udp_read(ssize_t nread, const uv_buf_t* buf, const sockaddr* addr, unsigned flags);
    void discard_kept_fd() noexcept;

    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_udp_t udp;
    } h_;
    bool handle_inited_ = false;
    bool connected_ = false;  // TCP connected / UDP and server open
    bool reading_ = false;
    bool paused_ = false;
    bool in_read_ = false;  // delivering this pipe's own read: its sends flush after it
    // An adopted UDP socket that was connect()ed: its sends to peer_ carry no address.
    bool udp_connected_ = false;
    bool read_eof_ = false;               // FIN received
    std::uint64_t bytes_out_at_eof_ = 0;  // bytes_out_ when the FIN came
    bool eof_delivered_ = false;          // finish_input() has passed the FIN on
    int kept_fd_ = -1;                    // do_close == false: the fd that survives the pipe
    Address local_, peer_;
    std::unique_ptr<ByteFilter> filter_;  // null: bytes pass as they are

    // ================================================================ tls_stage.cpp
    // A TLS pipe's state (null without TLS, so a plain pipe pays one pointer).
    struct TlsStage {
        std::shared_ptr<TlsContext> context;
        std::string host;             // clients: the name checked and sent as SNI
        TlsFilter* filter = nullptr;  // owned by filter_, once the TCP connection is up
        PipeDeadline handshake;
        bool established = false;
        bool close_wanted = false;  // close_notify to follow the queued plaintext
        bool close_sent = false;    // close_notify handed to OpenSSL
    };
    std::unique_ptr<TlsStage> tls_;
    // Open time: the loop's context for conf_->tls (errors name the field).
    Error prepare_tls(TlsRole role, std::string host);
    // The TLS state on `context` (a server's accepted pipes share the server's).
    void use_tls_context(std::shared_ptr<TlsContext> context, std::string host);
    // The TCP connection is up: the filter goes in and the handshake starts, bounded by
    // NetConf::ssl_handshake.
    Error start_tls();
    void tls_established();
    static void handshake_expired(Deadline& d);
    // After a filtered read: a close_notify from the peer ends the input like a FIN.
    void tls_after_read();
    // The socket's EOF on a TLS pipe: a clean end only after close_notify.
    void tls_eof();
    // A failure of the filter: its alert goes out if the socket takes it at once, then the end.
    void tls_fail(Error e);
    // Queues close_notify once, before a FIN or a graceful close: now when no plaintext is
    // queued, else after it (filter_pending).
    void tls_close_notify();
    bool tls_holds_output() const noexcept;
    TlsInfo tls_info_impl() const;

    // ================================================================ connector.cpp
    Error start_connect(const Address& to);
    void on_connected(int status);
    void start_resolve(std::string host, std::uint16_t port, FamilyPolicy policy);
    void resolved(Family f, Result<std::vector<Address>> got);
    void start_resolved_attempts();
    void cancel_resolve() noexcept;
    struct Resolving {  // while the Resolver answers a name connect() or udp() was given
        std::string host;
        std::uint16_t port = 0;
        std::uint64_t id = 0;  // the Resolver's lookup
        int pending = 0;       // families not answered yet
        Family preferred = Family::ipv6;
        std::vector<Address> held;  // answers waiting for the resolution delay
        Error error;                // the most telling failure so far
        Timer delay;
    };
    std::unique_ptr<Resolving> resolving_;
    std::unique_ptr<uv_connect_t> connect_req_;  // made on first use
    Timer connect_timer_, up_timer_;

    // happy_eyeballs.cpp: connecting to the first of several addresses that answers.
    struct Attempts {
        struct Running {
            PipeImpl* pipe = nullptr;
            int fd = -1;
            uv_poll_t* poll = nullptr;
            Address to;
        };
        std::vector<Address> all;    // every candidate, in the order tried
        std::vector<Address> queue;  // not tried yet in this try, in order
        int tries = 0;               // 1 + the retries started (NetConf::connect_retries)
        std::vector<std::unique_ptr<Running>> running;
        std::string failures;  // "ADDRESS: reason; ..."
        std::error_code first_error;
        Timer stagger;  // the next attempt's start
        std::uint64_t last_start_ms = 0;
        std::string what;  // what connect() was given, for messages
    };
    std::unique_ptr<Attempts> attempts_;  // null unless connecting to several addresses
    // Connects to the first of `addrs` that answers (families interleaved, one attempt
    // started every 250 ms or at once after a failure), bounded by con_timeout.
    void begin_attempts(std::vector<Address> addrs, std::string what);
    void try_addresses();  // one try: every address, as above
    // Every address of a try failed (or con_timeout passed): the next try after the backoff,
    // or the end after the last.
    void attempts_failed(EndReason reason, Error e);
    void start_next_attempt();
    void attempt_finished(Attempts::Running* run, int status);
    void attempt_failed(Attempts::Running& r, const std::string& why, std::error_code code);
    void close_attempt(Attempts::Running& r) noexcept;
    void close_attempts() noexcept;
    // Addresses a later DNS answer brought: they join the attempts under way.
    void add_attempt_addresses(const std::vector<Address>& more);

    // ================================================================ server.cpp
    Error start_listen();
    // Starts or stops watching the listening socket: not while paused, at max_clients, or
    // waiting to retry after running out of descriptors.
    void watch_accepts();
    void accept_ready(int status);
    void accepted(int fd);  // a connection accept4() took
    void close_accept_poll() noexcept;
    void handle_accepted(const std::shared_ptr<PipeImpl>& client);
    // Gives an accepted pipe the server's callbacks and hands it over (accept, waiters, queue).
    void deliver_accepted(const std::shared_ptr<PipeImpl>& client);
    // A TLS connection failed before it was handed over: the server's on_error hears it.
    void report_handshake_failure(const Error& e);
    // An accepted pipe of this server closed: take a connection the limit held back.
    void client_closed();
    std::optional<PipePtr> try_accept();
    void wait_for_accept(std::optional<std::chrono::milliseconds> timeout, AcceptResultFn fn);
    // A client an accept() waiter was handed but no longer wanted (a cancelled co::accept):
    // it goes to the next waiter, else to the front of the accept queue.
    void give_back_accepted(const PipePtr& client);
    // Hands `client` to the oldest accept() waiter; false when none waits.
    bool hand_to_accept_waiter(const PipePtr& client);
    std::unique_ptr<std::deque<std::shared_ptr<PipeImpl>>> accept_queue_;  // made on first use
    std::vector<AcceptWaiter> accept_waiters_;
    PipeImpl* server_ = nullptr;  // accepted pipes: the server, while both are open
    PipeImpl* first_client_ = nullptr;
    PipeImpl* last_client_ = nullptr;
    PipeImpl* client_prev_ = nullptr;
    PipeImpl* client_next_ = nullptr;
    std::size_t open_clients_ = 0;
    uv_poll_t* accept_poll_ = nullptr;    // servers: watches the listening socket
    Timer accept_retry_;                  // out of descriptors: look again later
    bool accepting_ = false;              // accept_poll_ is started
    bool accept_error_reported_ = false;  // once per burst of accept failures

    // ================================================================ input_stage.cpp
    // Received bytes (a read, or one datagram) on their way to the dispatcher.
    void input(std::string_view data, const Address& from) {
        if (framed_)
            feed_frames(data, from);
        else if (raw_kept_.empty()) [[likely]]
            deliver(data, from);
        else
            input_behind_kept(data);
    }
    // Raw pipes with kept bytes: new bytes queue behind them, so order holds.
    [[gnu::noinline]] void input_behind_kept(std::string_view data);
    // Framed pipes: decodes `data` and delivers each whole message.
    void feed_frames(std::string_view data, const Address& from);
    void end_framing(const std::string& what, std::size_t partial_frame_bytes = 0);
    // Installs conf_->framer's decoder; what the old one held moves to the new home.
    void switch_decoder();
    // Delivers what a pause or a framer switch left undelivered (unless paused or ending).
    void deliver_kept();
    // Runs deliver_kept() on a later loop iteration when something is kept.
    void schedule_kept();
    bool has_kept() const noexcept {
        return !raw_kept_.empty() || (decoder_ && decoder_->buffered() > 0);
    }
    // Framed streams: the frame deadline follows the decoder's partial frame.
    void update_frame_deadline(bool delivered_some);
    bool framed_ = false;  // conf_->framer is not raw
    // Undelivered input has one home: the decoder's carry on a framed pipe, raw_kept_ on a raw
    // one (bytes a pause or a switch to raw left). A switch moves them to the new home.
    std::unique_ptr<FrameDecoder> decoder_;  // made on the first read
    std::string raw_kept_;
    bool feeding_ = false;        // decoder_->feed() is running
    bool framer_switch_ = false;  // set_framer() during a feed: switch when it returns
    bool kick_scheduled_ = false;

    // ================================================================ dispatcher.cpp
    void deliver(std::string_view data, const Address& from,
                 const JsonMessageHeader* json = nullptr);
    void enqueue(Subscription& sub, const Message& msg);
    // A message a recv() waiter was handed but no longer wanted (a cancelled co::recv): it goes
    // to the subscription's next waiter, else back to the front of its queue.
    void give_back_message(SubId sub, RecvResult& r);
    [[gnu::noinline]] void dispatch_to_subs(const Message& msg);
    [[gnu::noinline]] bool seen_before(std::string_view data, const Address& from);
    Subscription* find_sub(SubId id);
    Subscription* implicit_sub();
    void erase_removed_subs();
    // recv(): completes on a later loop iteration, never inside the call.
    void recv(SubId sub, std::optional<std::chrono::milliseconds> timeout, RecvFn fn);
    std::optional<Received> try_recv(SubId sub);
    void wait_for(Subscription& s, SubId sub, std::optional<std::chrono::milliseconds> timeout,
                  RecvFn fn);
    std::vector<RecvWaiter> take_waiters();
    // The read side ended: waiters get `finished`.
    void wake_waiters_finished();
    // The pipe ended: every waiter gets `ended`, then the end callbacks run.
    void run_end_callbacks();
    void call_recv(const RecvFn& fn, RecvResult& r);

    CallbackId next_id_ = 1;
    CallbackList<MessageFn> message_cbs_;
    CallbackList<UpFn> up_cbs_;
    CallbackList<EndFn> end_cbs_;
    CallbackList<DrainFn> drain_cbs_;
    CallbackList<AcceptFn> accept_cbs_;
    CallbackList<EofFn> eof_cbs_;
    CallbackList<ErrorFn> error_cbs_;
    // Subscriptions in creation order; the implicit one (all_messages) is made on first use,
    // so an idle pipe carries no queue.
    std::vector<std::unique_ptr<Subscription>> subs_;
    bool implicit_sub_ = false;  // this pipe has the implicit subscription
    unsigned dispatch_depth_ = 0;
    bool subs_removed_ = false;  // some are marked removed, waiting for the dispatch to end
    SubId next_sub_ = 1;
    std::uint64_t next_waiter_ = 1;
    struct SeenIds {  // duplicate datagram suppression (enable_msg_ids)
        std::unordered_set<std::uint64_t> set;
        std::deque<std::uint64_t> order;
    };
    std::unique_ptr<SeenIds> seen_;
    std::uint64_t bytes_in_ = 0, bytes_out_ = 0, msgs_in_ = 0, msgs_out_ = 0, dropped_ = 0;
    std::uint64_t opened_ms_ = 0;
    RateWindow rate_in_, rate_out_;

    // ================================================================ write_queue.cpp
    Error send_bytes(std::string_view bytes);
    // send() on a pipe that is not an open TCP stream: the error, or the datagram for UDP.
    [[gnu::noinline]] Error send_not_stream(std::string_view bytes);
    [[gnu::noinline]] Error send_framed(std::string_view bytes);
    // Bytes past the framer (send_raw) and a json_header message with its own content type.
    Error send_unframed(std::string_view bytes);
    Error send_json(std::string_view content, std::string_view type, std::string_view encoding);
    // Forwarded bytes that lie in `block` (a relay's read): written at once when nothing is
    // queued, else the block is kept for the write instead of copying the bytes.
    Error send_kept(std::string_view bytes, ReadBlock* block);
    Error send_check() const;  // why send() is refused now, if it is
    // Appends `payload` as the framer frames it to `out`.
    Error frame_into(std::string_view payload, std::string& out);
    void count_sent(std::size_t n) noexcept {
        bytes_out_ += n;
        ++msgs_out_;
        rate_out_.add(uv_now(core_->loop), n);
    }
    void queue_owned_first();  // pending_ / borrowed_ into segs_, ahead of a kept block
    void flush_segs();
    void release_segs(std::vector<WriteSeg>& segs) noexcept;
    void flush() override;
    [[gnu::noinline]] void filter_pending();
    // The part of flush() after a short or failed uv_try_write: uv_write the rest.
    [[gnu::noinline]] void write_rest(int n);
    void on_write_done(int status);
    void after_written();
    // A burst's buffer is not kept once the queue is empty.
    // Called when the queue is empty: arms release_deadline_ if a buffer is above its keep
    // or the filter holds buffers (TLS records).
    void release_idle_buffers() noexcept;
    std::size_t buffer_keep() const noexcept { return 4 * conf_->reader_limit; }
    // Queued write bytes: pending, the unwritten part of the write in flight, datagrams.
    std::size_t queued_bytes() const noexcept {
        return pending_.size() + borrowed_.size() + segs_bytes_ +
               (write_in_flight_ ? h_.stream.write_queue_size : 0) + udp_queued_ +
               (filter_ ? filter_->buffered() + filtered_.size() : 0);
    }
    bool over_write_cap(std::size_t more) const noexcept {
        return conf_->max_write_queue != 0 && queued_bytes() + more > conf_->max_write_queue;
    }
    // Ends the pipe with errc::write_queue_full and returns that error.
    Error write_cap_error(std::size_t more);
    // Queued write bytes passed high_watermark: note it, stop this pipe's feeders (relays) or
    // its own reading (read_backpressure). The pipe stops itself only for replies, sends made
    // while it handles its own input: a pipe that sends a large request and then reads the
    // answers must keep reading, or it and an echoing peer would wait on each other forever.
    void note_queued() {
        if (queued_bytes() < conf_->high_watermark) return;
        above_high_ = true;
        if (!throttling_ && !feeders_.empty()) set_throttle(true);
        if (in_read_ && feeders_.empty() && conf_->read_backpressure && kind_ != PipeKind::udp &&
            !self_throttled_) {
            self_throttled_ = true;
            stop_reading();
        }
    }
    // The write side: FIN once what is queued has gone out (shutdown(), a relayed FIN).
    Error request_shutdown();
    void try_shutdown();
    // Ends the pipe (peer_close) once both directions are done.
    void maybe_finish();

    // `pending_` gathers sends until the flush; `inflight_` is under uv_write.
    std::string pending_;
    // Replies to the pipe's own read: a send of bytes that lie in the read's buffer (an echo)
    // is kept as a view and written from there by the flush at the end of on_read(), without a
    // copy into pending_. Only while pending_ and segs_ are empty; copied into pending_ by the
    // next send, by a partial write, or when on_read() returns unwritten.
    std::string_view read_data_;  // the bytes of the read being delivered
    std::string_view borrowed_;
    bool in_read_data(std::string_view b) const noexcept {
        auto p = reinterpret_cast<std::uintptr_t>(b.data());
        auto r = reinterpret_cast<std::uintptr_t>(read_data_.data());
        return p >= r && p + b.size() <= r + read_data_.size();
    }
    void unborrow();
    // What the flush writes (or encrypts): borrowed_ and pending_ are never both in use.
    std::string_view queued_plain() const noexcept {
        return borrowed_.empty() ? std::string_view(pending_) : borrowed_;
    }
    std::string inflight_;
    // A filter's output waits here for the flush, which swaps it with pending_, so that the
    // records of every flush reuse one buffer instead of a fresh one (whose pages the kernel
    // must clear). A large send on an established TLS pipe is encrypted straight into it
    // (send_filtered), after the plaintext queued before it.
    std::string filtered_;
    static constexpr std::size_t kEncryptAtSend = 16 * 1024;  // a full TLS record
    Error send_filtered(std::string_view bytes);
    std::size_t inflight_off_ = 0;
    // Kept read blocks (relays) and owned bytes queued before pending_, in order; the ones
    // under the write in flight; the iovec for them. (Vectors: an empty deque allocates.)
    std::vector<WriteSeg> segs_;
    std::size_t segs_bytes_ = 0;
    std::vector<WriteSeg> inflight_segs_;
    std::vector<uv_buf_t> iov_;
    bool write_in_flight_ = false;
    bool above_high_ = false;
    bool self_throttled_ = false;  // read_backpressure: reading stopped by its own queue
    bool shut_requested_ = false;  // write side to be shut down
    bool shut_issued_ = false;
    bool shut_done_ = false;
    std::unique_ptr<uv_write_t> write_req_;  // made on first use
    std::unique_ptr<uv_shutdown_t> shutdown_req_;

    // ================================================================ datagram.cpp
    Error send_datagram(std::string_view bytes, const Address& to, bool frame = true);
    // A datagram as it goes on the wire, already counted as sent: now, or queued with a copy.
    Error write_datagram(std::string_view bytes, const Address& to);
    // A destination given by name is known: the socket opens, held datagrams go out.
    void open_resolved_udp(const Address& dest);
    std::size_t udp_queued_ = 0;  // bytes in uv_udp_send requests and in udp_held_
    // Datagrams sent while the destination's name resolves (`to` empty: the destination).
    struct HeldDatagram {
        Address to;
        std::string bytes;
    };
    std::vector<HeldDatagram> udp_held_;
    Address udp_local_;  // the local address asked for, bound once the name has resolved
    // A UDP pipe whose destination name is still being resolved: no socket yet.
    bool udp_resolving() const noexcept { return kind_ == PipeKind::udp && !connected_; }
    std::string frame_scratch_;  // the framed datagram being sent

    // ================================================================ link.cpp
    bool linked_to(const PipeImpl* target) const noexcept;
    bool is_partner(const PipeImpl* other) const noexcept {  // linked both ways
        return linked_to(other) && other->linked_to(this);
    }
    bool in_relay() const noexcept;
    // Sends a message this pipe received down every linked pipe; false if this pipe ended.
    bool forward(std::string_view data);
    void set_throttle(bool on);
    void block_flow();
    void unblock_flow();
    // The peer sent FIN while this pipe is in a relay: pass it on, keep the other direction.
    void on_relay_fin();
    // The pipe is ending: drops its links, and passes the end on to its relay partners.
    void end_links();
    // Plain pointers: a pipe drops its links (both sides) when it starts ending, and at the
    // latest when its handle closes.
    std::vector<PipeImpl*> links_;    // the pipes this one sends its messages to
    std::vector<PipeImpl*> feeders_;  // the pipes linked to this one
    unsigned flow_blocked_ = 0;       // feeding targets above their high watermark
    bool throttling_ = false;         // above high_watermark with feeders stopped
    bool relayed_eof_ = false;        // the FIN was passed on through a relay
};

}  // namespace pipeworks::detail
