// A run, live. Server-Sent Events from GET /runs/{id}/stream: `run` (the run, when its state changes), `event`
// (one of its events: the run is read again), `log` (new lines of an attempt's log) and `end` (the run, terminal;
// the server closes the stream). Where the stream cannot be opened (a proxy that refuses it, an older server), and
// once the run has ended, GET /runs/{id} is polled every second instead; the stream is opened again, resuming after
// the last message seen, when a polled run is live again (retried).

import { get } from "./api.js";
import { TERMINAL } from "./dom.js";
import { every } from "./poll.js";

export function followRun(base, { onRun, onLog }, status) {
  let source = null;
  let poller = null;
  let streamWorks = null; // unknown until the first stream opens or fails
  let lastId = ""; // the cursor after the last stream message: a new stream resumes there

  const runSeen = (run) => {
    if (poller && streamWorks !== false && !TERMINAL.has(run.state)) {
      poller.stop();
      poller = null;
      stream();
    }
    return onRun(run);
  };

  // A stream message's refresh that fails (reading the attempts, say) is reported like a failed poll.
  const reported = (work) =>
    Promise.resolve(work).catch((error) => status.show(`Could not refresh: ${error.message}`, "error"));

  // Read the run again; a burst of events costs one read in flight and at most one after it.
  let fetching = null;
  let again = false;
  async function refetch() {
    if (fetching) {
      again = true;
      return fetching;
    }
    fetching = (async () => {
      do {
        again = false;
        await runSeen(await get(base));
      } while (again);
    })();
    try {
      await fetching;
    } finally {
      fetching = null;
    }
  }

  function poll() {
    poller ??= every(1000, async () => runSeen(await get(base)), status);
  }

  function close() {
    source?.close();
    source = null;
  }

  function stream() {
    if (source) return;
    source = new EventSource(`${base}/stream${lastId ? `?last_event_id=${encodeURIComponent(lastId)}` : ""}`);
    const seen = (message) => {
      lastId = message.lastEventId || lastId;
      return message;
    };
    source.addEventListener("open", () => {
      streamWorks = true;
    });
    source.addEventListener("run", (message) => reported(onRun(JSON.parse(seen(message).data))));
    // An event (progress, info...) changes what the run shows; `run` messages come only with a new state.
    source.addEventListener("event", (message) => reported(seen(message) && refetch()));
    source.addEventListener("log", (message) => onLog(JSON.parse(seen(message).data)));
    source.addEventListener("end", (message) => {
      close();
      reported(onRun(JSON.parse(seen(message).data)));
      poll();
    });
    source.addEventListener("error", () => {
      // Before it ever opened: no stream here, poll. After: the browser reconnects by itself, resuming from the
      // last id it saw (Last-Event-ID), with nothing lost or repeated.
      if (streamWorks) return;
      streamWorks = false;
      close();
      poll();
    });
  }

  stream();
  return {
    // After an action: show its effect at once, whichever way the page follows the run.
    refresh: () => reported(refetch()),
  };
}
