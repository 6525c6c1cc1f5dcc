// How the example servers keep SIGINT and SIGTERM from killing them while they stop.
//
// A Loop::on_signal handler lasts as long as its loop. When the loop goes, libuv gives the
// signal its default action back, so a second SIGTERM (a supervisor that repeats itself, a
// second Ctrl-C) arriving then would kill a server that is stopping in order: it would die of
// the signal instead of exiting 0. So, once the loop has returned, the signals are blocked (one
// that arrives waits), and once the loop is gone they are ignored (which drops one that
// waited). Only the calling thread blocks them: start other threads with them blocked too.
#pragma once

#include <pthread.h>

#include <csignal>

inline void hold_stop_signals() {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
}

inline void ignore_stop_signals() {
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGTERM, SIG_IGN);
}
