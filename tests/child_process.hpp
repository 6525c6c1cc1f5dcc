// A built binary run as a child process with its stdout and stderr in pipes, for the suites that
// test programs as a user runs them (pipeworks-relay, the examples). Every wait has a deadline,
// and a child still running when its Child goes away is killed, so a hang fails one case only.
#pragma once

#include "support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

extern char** environ;

namespace pw_test {

struct Child {
    pid_t pid = -1;
    int in = -1;  // the child's stdin, when it was asked for (Stdin::pipe)
    int out = -1, err = -1;
    std::string out_text, err_text;
    std::optional<int> status;  // the exit status once reaped (128 + signal when killed)

    // Stdin::inherit: the test's own stdin; Stdin::pipe: a pipe the test writes with
    // write_stdin() and ends with close_stdin(), for peers driven through their stdin.
    enum class Stdin : std::uint8_t { inherit, pipe };

    // args[0] is the binary's path.
    explicit Child(const std::vector<std::string>& args, Stdin stdin_mode = Stdin::inherit) {
        int o[2], e[2], i[2] = {-1, -1};
        REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
        REQUIRE(::pipe2(e, O_CLOEXEC) == 0);
        if (stdin_mode == Stdin::pipe) REQUIRE(::pipe2(i, O_CLOEXEC) == 0);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        if (i[0] >= 0) posix_spawn_file_actions_adddup2(&fa, i[0], 0);
        posix_spawn_file_actions_adddup2(&fa, o[1], 1);
        posix_spawn_file_actions_adddup2(&fa, e[1], 2);
        // A test run as a background job of a non-interactive shell inherits SIGINT ignored;
        // the child starts as it would from a terminal, with default signals and none blocked.
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t defaults, none;
        sigemptyset(&defaults);
        sigaddset(&defaults, SIGINT);
        sigaddset(&defaults, SIGTERM);
        sigemptyset(&none);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        const int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        ::close(o[1]);
        ::close(e[1]);
        if (i[0] >= 0) ::close(i[0]);
        in = i[1];
        out = o[0];
        err = e[0];
        ::fcntl(out, F_SETFL, O_NONBLOCK);
        ::fcntl(err, F_SETFL, O_NONBLOCK);
        if (rc != 0) {
            // The destructor does not run for a constructor that throws.
            close_stdin();
            ::close(out);
            ::close(err);
            FAIL("cannot run " << args[0] << ": " << std::strerror(rc));
        }
    }
    ~Child() {
        if (!status && pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        close_stdin();
        ::close(out);
        ::close(err);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    // Writes all of `text` to the child's stdin (Stdin::pipe); false when the child has closed
    // it. A short text into an empty pipe never blocks.
    bool write_stdin(std::string_view text) {
        REQUIRE(in >= 0);
        // A child gone before reading would raise SIGPIPE in the test: it is blocked for the
        // write and a pending one taken, so it fails this write only (EPIPE).
        sigset_t pipe_sig, old;
        sigemptyset(&pipe_sig);
        sigaddset(&pipe_sig, SIGPIPE);
        ::pthread_sigmask(SIG_BLOCK, &pipe_sig, &old);
        bool ok = true;
        while (ok && !text.empty()) {
            const ssize_t n = ::write(in, text.data(), text.size());
            if (n < 0 && errno == EINTR) continue;
            ok = n > 0;
            if (ok) text.remove_prefix(static_cast<std::size_t>(n));
        }
        const timespec now{};
        while (::sigtimedwait(&pipe_sig, nullptr, &now) == SIGPIPE) {
        }
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
        return ok;
    }
    // The end of the child's input, as a user's ^D.
    void close_stdin() {
        if (in >= 0) ::close(in);
        in = -1;
    }

    // Reads what is there and reaps the child if it has exited. True once it has.
    bool poll() {
        char buf[4096];
        for (auto [fd, text] : {std::pair{out, &out_text}, std::pair{err, &err_text}}) {
            ssize_t n;
            while ((n = ::read(fd, buf, sizeof buf)) > 0) text->append(buf, static_cast<size_t>(n));
        }
        if (!status) {
            int ws = 0;
            if (::waitpid(pid, &ws, WNOHANG) == pid)
                status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        }
        if (status) {  // drain the last output
            ssize_t n;
            while ((n = ::read(out, buf, sizeof buf)) > 0) out_text.append(buf, std::size_t(n));
            while ((n = ::read(err, buf, sizeof buf)) > 0) err_text.append(buf, std::size_t(n));
        }
        return status.has_value();
    }
    // Waits for pred() or the exit, with a deadline, running `loop` (if any) meanwhile: the
    // test's own pipes go on. False on the deadline.
    bool wait_for(const std::function<bool()>& pred, pipeworks::Loop* loop = nullptr,
                  std::chrono::milliseconds deadline = kDeadline) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (std::chrono::steady_clock::now() < end) {
            poll();
            if (pred()) return true;
            if (status) return pred();
            if (loop)
                run_for(*loop, 5ms);
            else
                ::usleep(5000);
        }
        return false;
    }
    // Waits for the first line on stdout and returns the moment it is there (wait_for checks
    // every 5 ms): for tests that act on the line as fast as a supervisor would. False on the
    // deadline or when stdout closes first.
    bool wait_first_line(std::chrono::milliseconds deadline = kDeadline) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (out_text.find('\n') == std::string::npos) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{out, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[4096];
            const ssize_t n = ::read(out, buf, sizeof buf);
            if (n == 0) return false;
            if (n > 0) out_text.append(buf, static_cast<std::size_t>(n));
        }
        return true;
    }
    // Waits for the exit within the deadline; the status, or -1 on the deadline.
    int wait_exit(pipeworks::Loop* loop = nullptr) {
        if (wait_for([this] { return status.has_value(); }, loop)) return *status;
        return -1;
    }
};

// Sends `sig` to the child, then the same again every 20 us or so until it has exited, running
// `loop` (if any) meanwhile: a supervisor that repeats itself. The repeats land while the child
// stops, some in its very last steps, where a signal whose handler is gone would kill it.
// The exit status (128 + signal when killed), or -1 on the deadline.
inline int signal_until_exit(Child& child, int sig, pipeworks::Loop* loop = nullptr,
                             std::chrono::milliseconds deadline = kDeadline) {
    REQUIRE(::kill(child.pid, sig) == 0);
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
        ::usleep(20);
        ::kill(child.pid, sig);  // harmless on an exited child until it is reaped below
        if (loop) loop->run_nowait();
        if (child.poll()) return *child.status;
    }
    return -1;
}

// Descriptors the child has open now.
inline std::size_t open_fds(pid_t pid) {
    const std::filesystem::directory_iterator fds("/proc/" + std::to_string(pid) + "/fd");
    return static_cast<std::size_t>(std::distance(begin(fds), end(fds)));
}

// The lowest descriptor number the child does not use: the number its next open would take, so
// a soft limit of it makes that open fail with EMFILE.
inline rlim_t lowest_free_fd(pid_t pid) {
    std::set<long> used;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
        used.insert(std::stol(e.path().filename().string()));
    long n = 0;
    while (used.count(n)) ++n;
    return static_cast<rlim_t>(n);
}

// Sets the child's soft limit of open files (its hard limit stays); the previous soft limit.
inline rlim_t set_open_file_limit(pid_t pid, rlim_t soft) {
    rlimit old{};
    REQUIRE(::prlimit(pid, RLIMIT_NOFILE, nullptr, &old) == 0);
    rlimit now = old;
    now.rlim_cur = soft;
    REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &now, nullptr) == 0);
    return old.rlim_cur;
}

// The built program whose path is in `var` (meson test sets it); empty, with a message saying
// the case skips, when it is not set.
inline std::string binary_from_env(const char* var) {
    const char* b = std::getenv(var);
    if (b == nullptr || *b == '\0') {
        MESSAGE("skipped: " << var << " is not set (meson test sets it)");
        return "";
    }
    REQUIRE_MESSAGE(::access(b, X_OK) == 0, b << " is not built: build the project first");
    return b;
}

// Waits for the first line of a server program, checks that it is exactly
// "listening on HOST:PORT" with the port the OS chose, and returns that address.
inline pipeworks::Address listening_address(Child& server, std::string_view host,
                                            pipeworks::Loop* loop = nullptr) {
    REQUIRE_MESSAGE(
        server.wait_for([&] { return server.out_text.find('\n') != std::string::npos; }, loop),
        "no first line; stderr: " << server.err_text);
    const std::string line = server.out_text.substr(0, server.out_text.find('\n'));
    CAPTURE(line);
    const std::string prefix = "listening on " + std::string(host) + ":";
    REQUIRE(line.starts_with(prefix));
    const std::string port = line.substr(prefix.size());
    REQUIRE(!port.empty());
    REQUIRE(port.find_first_not_of("0123456789") == std::string::npos);
    auto at = pipeworks::Address::parse(line.substr(std::string_view("listening on ").size()));
    REQUIRE(at.ok());
    CHECK(at->port() != 0);
    CHECK(std::to_string(at->port()) == port);
    return *at;
}

// Runs `bin` with `args` and checks that it refuses them as a bad command line: exit status 2,
// `says` and `usage` on stderr, nothing on stdout.
inline void expect_bad_arguments(const std::string& bin, const std::vector<std::string>& args,
                                 const std::string& says, const std::string& usage) {
    std::vector<std::string> argv{bin};
    argv.insert(argv.end(), args.begin(), args.end());
    CAPTURE(says);
    Child child(argv);
    CHECK(child.wait_exit() == 2);
    CHECK(child.err_text.find(says) != std::string::npos);
    CHECK(child.err_text.find(usage) != std::string::npos);
    CHECK(child.out_text.empty());
}

}  // namespace pw_test
