// The console's only way to the service: the public /v4 API, with HTTP Basic credentials on every call.
// The credentials live in this tab's sessionStorage (gone when the tab closes), never in a cookie or
// localStorage; fetch is told to send no cookies and no browser-cached HTTP credentials.

const STORAGE_KEY = 'schedules-console.credentials';
// The API sits beside the console: /console/ -> /v4/ (also behind a proxy that mounts both under a path).
const API_ROOT = new URL('../', document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  load() {
    try {
      return JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    } catch {
      return null;
    }
  },
  save(credentials) {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
  },
  forget() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

function basic(appKey, secret) {
  const bytes = new TextEncoder().encode(`${appKey}:${secret}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

const seconds = (value, fallback) => (Number.isFinite(Number.parseInt(value, 10)) ? Number.parseInt(value, 10) : fallback);

export class Api {
  constructor(appKey, secret) {
    this.appKey = appKey;
    this.authorization = basic(appKey, secret);
  }

  // One call: the answer ({status, json, location, retryAfter}) of a 2xx; an ApiError with the service's
  // envelope (code, message naming the field) otherwise.
  async call(method, path, { body, query } = {}) {
    const url = new URL(path, API_ROOT);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
    }
    const headers = { Authorization: this.authorization, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(url, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit', cache: 'no-store', redirect: 'error',
      });
    } catch (error) {
      throw new ApiError(0, 0, `The service did not answer (${error.message}).`);
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) {
      const envelope = json?.error;
      throw new ApiError(response.status, envelope?.code ?? 0, envelope?.message ?? `HTTP ${response.status}`);
    }
    const location = response.headers.get('Location');
    return {
      status: response.status,
      json,
      // A Location is resolved against the URL called (docs/api.md, Polling a run).
      location: location ? new URL(location, url).href : null,
      retryAfter: seconds(response.headers.get('Retry-After'), null),
    };
  }

  // The app's time zone, from the one answer that says it without a task: a preview's `time_zone`. Also
  // the sign-in check: wrong credentials are a 401 here.
  async timeZone() {
    const answer = await this.preview({ cron: { expression: '0 0 1 1 *' } }, 1);
    return answer.time_zone;
  }

  list(query) {
    return this.call('GET', 'v4/schedules', { query }).then((a) => a.json);
  }
  get(id) {
    return this.call('GET', `v4/schedules/${encodeURIComponent(id)}`).then((a) => a.json);
  }
  create(body) {
    return this.call('POST', 'v4/schedules', { body }).then((a) => a.json);
  }
  update(id, body) {
    return this.call('PUT', `v4/schedules/${encodeURIComponent(id)}`, { body }).then((a) => a.json);
  }
  remove(id) {
    return this.call('DELETE', `v4/schedules/${encodeURIComponent(id)}`);
  }
  preview(trigger, count = 5) {
    return this.call('POST', 'v4/schedules/preview', { body: { trigger }, query: { count } }).then((a) => a.json);
  }
  upcoming(id, count = 5) {
    return this.call('GET', `v4/schedules/${encodeURIComponent(id)}/upcoming`, { query: { count } }).then((a) => a.json);
  }
  runs(id, page = 1) {
    return this.call('GET', `v4/schedules/${encodeURIComponent(id)}/runs`, { query: { page } }).then((a) => a.json);
  }
  runNow(id) {
    return this.call('POST', `v4/schedules/${encodeURIComponent(id)}/run`);
  }
  // The task's webhook state; the API answers 404 when it has none (the task itself exists: it was just read).
  webhook(id) {
    return this.call('GET', `v4/schedules/${encodeURIComponent(id)}/webhook`).then((a) => a.json,
      (error) => { if (error.status === 404) return { exists: false }; throw error; });
  }
  createWebhook(id) {
    return this.call('POST', `v4/schedules/${encodeURIComponent(id)}/webhook`).then((a) => a.json);
  }
  revokeWebhook(id) {
    return this.call('DELETE', `v4/schedules/${encodeURIComponent(id)}/webhook`).then((a) => a.json);
  }

  // Follow a run's status URL as the polling pattern says: wait Retry-After, GET Location, again while 202.
  // `onStatus` sees every answer; resolves with the 200 body. Stops (rejects) when `signal` aborts.
  async follow(started, onStatus, signal) {
    let { location, retryAfter } = started;
    onStatus(started.json, started.status);
    for (;;) {
      await pause(retryAfter ?? 2, signal);
      const answer = await this.call('GET', location);
      onStatus(answer.json, answer.status);
      if (answer.status === 200) return answer.json;
      location = answer.location ?? location;
      retryAfter = answer.retryAfter ?? retryAfter;
    }
  }
}

function pause(secondsToWait, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, secondsToWait * 1000);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}
