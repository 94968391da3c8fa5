#pragma once
/// \file cpu/executor.hpp
/// How the CPU kernels run in parallel: a tiny executor interface, a serial executor, and a
/// small thread pool on std::thread. An engine that has its own threads implements `executor`
/// (two functions) and passes it in `attention_options`; the kernels then never start a thread.
///
/// Contract of `executor::parallel_for(tasks, body)`:
///  - call `body(i)` exactly once for every i in [0, tasks), on any threads, in any order, any
///    number at once; return only after every call has returned (all their writes visible to
///    the caller: a release/acquire edge, as joining a thread gives);
///  - the body never throws and never calls parallel_for on the same executor again;
///  - `concurrency()` is how many bodies may run at once (>= 1); the kernels use it only to cut
///    the work into enough pieces, never for correctness.
/// The kernels keep their per-thread scratch in thread_local storage, so any thread may run any
/// task.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

#include "../error.hpp"

namespace mlkv::cpu {

/// A non-owning reference to `void(int task)`: cheaper than std::function and never allocates.
class task_ref {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cv_t<F>, task_ref>)
  task_ref(F& f) : obj_(static_cast<void*>(&f)), call_([](void* o, int i) { (*static_cast<F*>(o))(i); }) {}
  void operator()(int i) const { call_(obj_, i); }

 private:
  void* obj_;
  void (*call_)(void*, int);
};

/// Runs independent tasks, possibly in parallel (contract in the file comment).
class executor {
 public:
  virtual ~executor() = default;
  /// How many tasks may run at once (>= 1).
  virtual int concurrency() const = 0;
  /// Calls body(i) for every i in [0, tasks) and returns when all have returned.
  virtual void parallel_for(int tasks, task_ref body) = 0;
};

/// Runs every task on the calling thread, in order.
class serial_executor final : public executor {
 public:
  int concurrency() const override { return 1; }
  void parallel_for(int tasks, task_ref body) override {
    for (int i = 0; i < tasks; ++i) body(i);
  }
};

/// A fixed set of std::thread workers; the calling thread works too, so `thread_pool(n)` uses n
/// threads in all (n - 1 started here). Tasks are claimed one at a time from a shared counter
/// (dynamic balance); a call returns as soon as every task has finished, whether or not every
/// worker woke up for it, so a pool larger than the machine costs little. Workers spin for
/// `spin` after a batch (pausing, then yielding the core) before they sleep on the counter
/// (std::atomic::wait), so back-to-back decode steps do not pay a wake-up each.
class thread_pool final : public executor {
 public:
  /// n threads in all; 0 means std::thread::hardware_concurrency().
  explicit thread_pool(int n = 0, std::chrono::microseconds spin = std::chrono::microseconds(200)) : spin_(spin) {
    if (n == 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    MLKV_CHECK(n >= 1 && n <= 4096, "thread pool size (", n, ") must be between 1 and 4096");
    threads_ = n;
    workers_.reserve(static_cast<std::size_t>(n - 1));
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() override {
    stop_.store(true, std::memory_order_relaxed);
    state_.store(next_generation() << 32, std::memory_order_release);
    state_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int concurrency() const override { return threads_; }

  void parallel_for(int tasks, task_ref body) override {
    if (tasks <= 0) return;
    if (threads_ == 1 || tasks == 1) {
      for (int i = 0; i < tasks; ++i) body(i);
      return;
    }
    // Close the previous batch first (a worker that read its state late then fails its claim),
    // then set this batch up and open it. seq_cst orders the three against a worker's claim.
    const std::uint64_t gen = next_generation();
    state_.store((gen << 32) | closed);
    body_ = &body;
    tasks_.store(tasks);
    done_.store(0);
    state_.store(gen << 32);
    state_.notify_all();
    work(gen);
    for (int k = 0; done_.load(std::memory_order_acquire) != tasks; ++k) relax(k);
  }

 private:
  static constexpr std::uint64_t closed = 0xffffffffu;  // "next task" of a batch being set up

  std::uint64_t next_generation() {
    if (++generation_ == 0) ++generation_;  // 32-bit generations, 0 is "none seen yet"
    return generation_;
  }

  static void relax(int k) {
    if (k < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      __asm__ volatile("yield");
#endif
    } else {
      std::this_thread::yield();  // let a descheduled worker finish its task
    }
  }

  /// Claims and runs tasks of batch `gen` until none is left. The claim is a compare-exchange on
  /// (generation, next task), so a worker that wakes late can never run a task of a finished
  /// batch (parallel_for closes it before touching body_/tasks_); body_ is read only while a
  /// task is held, when the batch cannot end.
  void work(std::uint64_t gen) {
    std::uint64_t s = state_.load();
    for (;;) {
      if ((s >> 32) != gen) return;
      const std::uint32_t i = static_cast<std::uint32_t>(s);
      if (i >= static_cast<std::uint32_t>(tasks_.load())) return;
      if (state_.compare_exchange_weak(s, s + 1)) {
        (*body_)(static_cast<int>(i));
        done_.fetch_add(1, std::memory_order_release);
        s = state_.load();
      }
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t s = state_.load(std::memory_order_acquire);
      const auto until = std::chrono::steady_clock::now() + spin_;
      for (int k = 0; (s >> 32) == seen || (s & closed) == closed; ++k) {
        if ((k & 63) == 63 && std::chrono::steady_clock::now() > until) {
          state_.wait(s, std::memory_order_acquire);  // returns once state_ differs from s
        } else {
          relax(k);
        }
        s = state_.load(std::memory_order_acquire);
      }
      seen = s >> 32;
      if (stop_.load(std::memory_order_relaxed)) return;
      work(seen);
    }
  }

  int threads_ = 1;
  std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
  std::uint32_t generation_ = 0;         // batches started (touched by the calling thread only)
  const task_ref* body_ = nullptr;
  std::atomic<int> tasks_{0};
  std::atomic<int> done_{0};
  std::atomic<std::uint64_t> state_{0};  // (generation << 32) | next task
  std::atomic<bool> stop_{false};
};

}  // namespace mlkv::cpu
