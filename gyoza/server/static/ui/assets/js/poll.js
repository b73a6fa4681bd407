// Live pages poll the JSON API: every `ms` while the tab is visible, at once when it becomes visible again.
// A failed refresh is reported on the page's status line and retried at the next tick.

export function every(ms, task, status) {
  let timer = null;
  let stopped = false;
  let failing = false;
  let running = false;

  async function tick() {
    if (running || stopped) return;
    running = true;
    clearTimeout(timer);
    timer = null;
    if (!document.hidden) {
      try {
        await task();
        if (failing) status?.show("");
        failing = false;
      } catch (error) {
        failing = true;
        status?.show(`Could not refresh: ${error.message}`, "error");
      }
    }
    running = false;
    if (!stopped) timer = setTimeout(tick, ms);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null) tick();
  });
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now: tick,
  };
}
