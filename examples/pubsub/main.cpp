// pubsub: a publish/subscribe broker and its two clients, over length-framed TCP.
//
//   pubsub broker [--bind HOST:PORT] [--max-clients N] [--max-topics N] [--drop-slow]
//   pubsub sub HOST:PORT TOPIC [--count N]
//   pubsub pub HOST:PORT TOPIC [MESSAGE...]
//
// broker: prints "listening on HOST:PORT" first (the real port when 0 was asked), logs refused
// clients on stderr, exits 0 on SIGINT/SIGTERM (a second signal while it stops changes
// nothing). sub: prints each message published on TOPIC, one per line; with --count it exits
// after N. pub: publishes each MESSAGE, or each line of standard input when there is none, then
// closes once everything has left. The protocol and the broker's choices (backpressure,
// --drop-slow) are in broker.hpp and docs/relays.md.
#include "../stop_signals.hpp"
#include "../version_flag.hpp"
#include "broker.hpp"

#include <pipeworks/pipeworks.hpp>

#include <charconv>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

namespace {

constexpr const char* kUsage =
    "usage: pubsub broker [--bind HOST:PORT] [--max-clients N] [--max-topics N] [--drop-slow]\n"
    "       pubsub sub HOST:PORT TOPIC [--count N]\n"
    "       pubsub pub HOST:PORT TOPIC [MESSAGE...]\n";

int usage(const std::string& why) {
    std::fprintf(stderr, "pubsub: %s\n%s", why.c_str(), kUsage);
    return 2;
}

bool parse_count(const char* text, std::size_t& out) {
    std::string_view s(text);
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size() && out > 0;
}

NetConf client_conf() {
    NetConf conf;
    conf.framer = Framer::message();
    return conf;
}

// Connects to the broker and sends `command`. The first message back is the broker's answer:
// `joined` runs on "OK"; "ERR ..." is reported, sets `status` and closes (the caller's end
// callback reports a connection that fails).
Result<PipePtr> join(Loop& loop, std::string_view broker, const std::string& command, int& status,
                     std::function<void(Pipe&)> joined) {
    auto opened = Pipe::connect(loop, broker, client_conf());
    if (!opened) return opened.error();
    PipePtr pipe = *opened;
    if (Error e = pipe->send(command)) return e;
    auto answered = std::make_shared<bool>(false);
    pipe->on_message([answered, &status, joined = std::move(joined)](Pipe& p, const Message& m) {
        if (*answered) return;
        *answered = true;
        if (m.data == "OK") return joined(p);
        std::fprintf(stderr, "pubsub: broker: %.*s\n", static_cast<int>(m.data.size()),
                     m.data.data());
        status = 1;
        p.close();
    });
    return pipe;
}

// Reports how a pipe ended when that was not this side's doing.
void report_end(const EndInfo& e) {
    std::fprintf(stderr, "pubsub: connection ended: %s%s%s\n", to_string(e.reason),
                 e.error.message.empty() ? "" : ": ", e.error.message.c_str());
}

int run_broker(int argc, char** argv) {
    pubsub::BrokerConfig config;
    config.bind = Address::loopback(Family::ipv4);
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--bind" && i + 1 < argc) {
            auto addr = Address::parse(argv[++i]);
            if (!addr) return usage("--bind: " + addr.error().message);
            config.bind = *addr;
        } else if (a == "--max-clients" && i + 1 < argc) {
            if (!parse_count(argv[++i], config.max_clients))
                return usage("--max-clients: expected a positive number");
        } else if (a == "--max-topics" && i + 1 < argc) {
            if (!parse_count(argv[++i], config.max_topics))
                return usage("--max-topics: expected a positive number");
        } else if (a == "--drop-slow") {
            config.drop_slow = true;
        } else {
            return usage("broker: unknown argument: " + a);
        }
    }
    Loop loop;
    auto started = pubsub::Broker::start(loop, config);
    if (!started) {
        std::fprintf(stderr, "pubsub: %s\n", started.error().message.c_str());
        return 1;
    }
    std::shared_ptr<pubsub::Broker> broker = *started;
    broker->on_log(
        [](const std::string& line) { std::fprintf(stderr, "pubsub: %s\n", line.c_str()); });
    // Handlers first: whoever reads the line below may signal at once.
    auto stop = [&](int) { broker->close(); };
    auto on_int = loop.on_signal(SIGINT, stop);
    auto on_term = loop.on_signal(SIGTERM, stop);
    std::printf("listening on %s\n", broker->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    hold_stop_signals();  // before the loop (and its signal handlers) goes
    return 0;
}

int run_sub(const std::string& broker, const std::string& topic, std::size_t count) {
    Loop loop;
    int status = 0;
    std::size_t received = 0;
    bool subscribed = false;
    // Output is flushed once per loop iteration: at once for a reader, without a write per
    // message when many arrive together.
    Timer flush;
    auto on_message = [&](Pipe& p, const Message& m) {
        std::fwrite(m.data.data(), 1, m.data.size(), stdout);
        std::fputc('\n', stdout);
        if (!flush.active()) flush = loop.call_later(0ms, [] { std::fflush(stdout); });
        if (++received == count) p.close();
    };
    auto opened = join(loop, broker, "SUB " + topic, status, [&](Pipe& p) {
        subscribed = true;
        p.on_message(on_message);  // the answer is behind us: every message from now on
    });
    if (!opened) {
        std::fprintf(stderr, "pubsub: %s\n", opened.error().message.c_str());
        return 1;
    }
    PipePtr pipe = *opened;
    bool interrupted = false;
    pipe->on_end([&](Pipe&, const EndInfo& e) {
        if (e.reason == EndReason::local_close) return;  // --count reached, a signal, or ERR
        // The broker going away ends an open-ended subscription; anything else is a failure.
        if (e.reason != EndReason::peer_close || !subscribed || count > 0) {
            report_end(e);
            status = 1;
        }
    });
    auto stop = [&](int) {
        interrupted = true;
        pipe->close();
    };
    auto on_int = loop.on_signal(SIGINT, stop);
    auto on_term = loop.on_signal(SIGTERM, stop);
    loop.run();
    hold_stop_signals();
    if (count > 0 && received < count && !interrupted && status == 0) status = 1;
    return status;
}

// Standard input's lines, for the loop. A thread reads them (a blocking read must not stall
// the loop) and hands them over in batches: one post wakes the loop for every line read since
// the last. At most kMaxWaiting lines wait, so a broker that slows this publisher down slows
// the reading too instead of filling memory.
class LineFeed {
public:
    static constexpr std::size_t kMaxWaiting = 4096;

    // Starts the reading thread; `wake` is posted to `loop` whenever lines (or the end of input)
    // wait and no wake is queued yet. The thread may be blocked reading when the process exits.
    static std::shared_ptr<LineFeed> start(Loop& loop, std::function<void()> wake) {
        auto feed = std::make_shared<LineFeed>();
        feed->loop_ = &loop;
        // Signals are the loop thread's: the reader starts with them blocked (it inherits the
        // mask), so none reaches it once the loop's handlers are gone.
        sigset_t stop, mask;
        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &stop, &mask);
        std::thread([feed, wake = std::move(wake)] {
            std::string line;
            while (std::getline(std::cin, line)) {
                std::unique_lock lock(feed->m_);
                feed->cv_.wait(lock, [&] {
                    return !feed->loop_ || feed->lines_.size() < LineFeed::kMaxWaiting;
                });
                if (!feed->loop_) return;
                feed->lines_.push_back(std::move(line));
                feed->wake(wake);
            }
            std::lock_guard lock(feed->m_);
            feed->eof_ = true;
            if (feed->loop_) feed->wake(wake);
        }).detach();
        pthread_sigmask(SIG_SETMASK, &mask, nullptr);
        return feed;
    }

    // Loop thread: the lines read so far; `eof` is set once they are the last ones.
    std::vector<std::string> take(bool& eof) {
        std::lock_guard lock(m_);
        woken_ = false;
        eof = eof_;
        cv_.notify_all();
        return std::exchange(lines_, {});
    }

    // Loop thread, before the loop goes away: nothing more is posted, the thread stops.
    void stop() {
        std::lock_guard lock(m_);
        loop_ = nullptr;
        cv_.notify_all();
    }

private:
    void wake(const std::function<void()>& fn) {  // with m_ held
        if (woken_) return;
        woken_ = true;
        loop_->post(fn);
    }

    std::mutex m_;
    std::condition_variable cv_;
    Loop* loop_ = nullptr;  // null once stopped
    std::vector<std::string> lines_;
    bool woken_ = false;  // a wake is queued and has not taken the lines yet
    bool eof_ = false;
};

int run_pub(const std::string& broker, const std::string& topic,
            const std::vector<std::string>& messages) {
    Loop loop;
    int status = 0;
    PipePtr pipe;
    Timer poll;
    bool closing = false;
    // Closes once every byte has reached the OS: close() alone would give a slowed-down
    // publisher only NetConf::con_timeout to get its last bytes out.
    std::function<void()> close_when_sent = [&] {
        if (pipe->ending()) return;
        if (pipe->write_queue_bytes() == 0) {
            closing = true;
            pipe->close();
        } else {
            poll = loop.call_later(10ms, close_when_sent);
        }
    };
    auto send_all = [&](Pipe& p, const std::vector<std::string>& batch) {
        for (const auto& m : batch)
            if (Error e = p.send(m)) {
                std::fprintf(stderr, "pubsub: %s\n", e.message.c_str());
                status = 1;
                p.close();
                return false;
            }
        return true;
    };
    std::shared_ptr<LineFeed> feed;
    bool input_done = false;
    // Sends what standard input has given, unless the broker is slowing this publisher down:
    // then the drain callback comes back here, and meanwhile the reading thread waits.
    std::function<void()> send_input = [&] {
        if (input_done || pipe->ending() || !pipe->writable()) return;
        bool eof = false;
        if (!send_all(*pipe, feed->take(eof))) return;
        if (eof) {
            input_done = true;
            close_when_sent();
        }
    };
    auto joined = [&](Pipe& p) {
        if (!messages.empty()) {
            if (send_all(p, messages)) close_when_sent();
            return;
        }
        p.on_drain([&](Pipe&) { send_input(); });
        feed = LineFeed::start(loop, [&] { send_input(); });
    };
    auto opened = join(loop, broker, "PUB " + topic, status, joined);
    if (!opened) {
        std::fprintf(stderr, "pubsub: %s\n", opened.error().message.c_str());
        return 1;
    }
    pipe = *opened;
    pipe->on_end([&](Pipe&, const EndInfo& e) {
        poll.cancel();
        if (closing || status != 0) return;
        report_end(e);
        status = 1;
    });
    auto stop = [&](int) {
        status = 1;  // what was not sent yet is lost
        pipe->close();
    };
    auto on_int = loop.on_signal(SIGINT, stop);
    auto on_term = loop.on_signal(SIGTERM, stop);
    loop.run();
    hold_stop_signals();
    if (feed) feed->stop();
    return status;
}

// Runs the command (its loop is gone when this returns); its exit status.
int run(const std::string& cmd, int argc, char** argv) {
    if (cmd == "broker") return run_broker(argc - 2, argv + 2);
    if (argc < 4) return usage(cmd + ": HOST:PORT and TOPIC are needed");
    std::string broker = argv[2], topic = argv[3];
    if (cmd == "sub") {
        std::size_t count = 0;
        for (int i = 4; i < argc; ++i) {
            std::string a = argv[i];
            if (a == "--count" && i + 1 < argc) {
                if (!parse_count(argv[++i], count))
                    return usage("--count: expected a positive number");
            } else {
                return usage("sub: unknown argument: " + a);
            }
        }
        return run_sub(broker, topic, count);
    }
    return run_pub(broker, topic, std::vector<std::string>(argv + 4, argv + argc));
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    if (argc < 2) return usage("a command is needed");
    std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (cmd != "broker" && cmd != "sub" && cmd != "pub") return usage("unknown command: " + cmd);
    const int status = run(cmd, argc, argv);
    ignore_stop_signals();  // the loop is gone: a late signal must not change the status
    return status;
}
