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
/// threads in all (n - 1 started here). Workers spin for `spin` after a batch before they sleep
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
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int concurrency() const override { return threads_; }

  void parallel_for(int tasks, task_ref body) override {
    if (tasks <= 0) return;
    if (threads_ == 1 || tasks == 1) {
      for (int i = 0; i < tasks; ++i) body(i);
      return;
    }
    body_ = &body;
    tasks_ = tasks;
    next_.store(0, std::memory_order_relaxed);
    busy_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // publishes body_, tasks_, next_
    generation_.notify_all();
    run_tasks();
    // Wait for the workers to leave this batch (they may still be finishing a task).
    while (busy_.load(std::memory_order_acquire) != 0) pause();
    body_ = nullptr;
  }

 private:
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
  }

  void run_tasks() {
    const task_ref& body = *body_;
    for (;;) {
      const int i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= tasks_) break;
      body(i);
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      // Spin a while for the next batch, then sleep until the generation changes.
      const auto until = std::chrono::steady_clock::now() + spin_;
      std::uint64_t g = generation_.load(std::memory_order_acquire);
      for (int k = 0; g == seen; ++k) {
        if ((k & 255) == 255 && std::chrono::steady_clock::now() > until) {
          generation_.wait(seen, std::memory_order_acquire);
        } else {
          pause();
        }
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load(std::memory_order_relaxed)) return;
      run_tasks();
      busy_.fetch_sub(1, std::memory_order_release);
    }
  }

  int threads_ = 1;
  std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
  const task_ref* body_ = nullptr;
  int tasks_ = 0;
  std::atomic<int> next_{0};
  std::atomic<int> busy_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace mlkv::cpu
