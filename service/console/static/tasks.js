// The task list: sorted by a column header (the API's `sort`), filtered by name, kind and state, in pages of
// the API's 50. The list's state lives in the URL (#/tasks?sort=-next_run&page=2), so it can be linked.

import { h, timeElement } from './dom.js';

export const KINDS = { single: 'One-time', periodical: 'Recurring', cron: 'Cron', interval: 'Interval' };
export const kindOf = (trigger) => Object.keys(trigger ?? {})[0];

// The columns the API can sort by; kind and enabled are filters instead (the API has no such order).
const SORTABLE = { name: 'Name', next_run: 'Next run', last_run: 'Last run' };

export function lastRunText(lastRun, zone) {
  if (!lastRun) return h('span', { class: 'none' }, 'never');
  return h('span', {}, h('span', { class: `outcome ${lastRun.outcome}` }, lastRun.outcome), ' ',
    timeElement(lastRun.due_at, zone));
}

export async function tasksView(context, query) {
  const { api, zone } = context;
  const state = {
    sort: query.sort ?? '', page: Number.parseInt(query.page ?? '1', 10) || 1,
    name_prefix: query.name_prefix ?? '', kind: query.kind ?? '', enabled: query.enabled ?? '',
  };

  const nameFilter = h('input', { id: 'filter-name', type: 'search', value: state.name_prefix, autocomplete: 'off' });
  const kindFilter = h('select', { id: 'filter-kind' }, h('option', { value: '' }, 'Any kind'),
    Object.entries(KINDS).map(([value, label]) => h('option', { value, selected: state.kind === value }, label)));
  const enabledFilter = h('select', { id: 'filter-enabled' }, h('option', { value: '' }, 'Enabled or not'),
    h('option', { value: 'true', selected: state.enabled === 'true' }, 'Enabled'),
    h('option', { value: 'false', selected: state.enabled === 'false' }, 'Disabled'));
  const filters = h('form', { class: 'filters', role: 'search', onsubmit: (event) => event.preventDefault() },
    h('div', { class: 'field' }, h('label', { for: 'filter-name' }, 'Name starts with'), nameFilter),
    h('div', { class: 'field' }, h('label', { for: 'filter-kind' }, 'Kind'), kindFilter),
    h('div', { class: 'field' }, h('label', { for: 'filter-enabled' }, 'State'), enabledFilter));
  const results = h('div', { class: 'results' });
  const status = h('p', { class: 'sr-status', role: 'status' });

  async function load() {
    const query = {
      page: state.page, sort: state.sort || undefined, name_prefix: state.name_prefix || undefined,
      kind: state.kind || undefined, enabled: state.enabled || undefined,
    };
    const search = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined)).toString();
    history.replaceState(null, '', `#/tasks${search && search !== 'page=1' ? `?${search}` : ''}`);
    let answer;
    try {
      answer = await api.list(query);
    } catch (error) {
      results.replaceChildren(h('p', { class: 'alert', role: 'alert' }, error.message));
      return;
    }
    results.replaceChildren(table(answer), pager(answer));
    status.textContent = `${answer.total_count} task${answer.total_count === 1 ? '' : 's'}, page ${answer.page} of ${Math.max(answer.total_pages, 1)}`;
  }

  function sortHeader(key, label) {
    const [current, descending] = [state.sort.replace(/^-/, ''), state.sort.startsWith('-')];
    const active = current === key;
    const button = h('button', {
      type: 'button', class: 'sort', 'data-sort': key,
      onclick: () => {
        state.sort = active && !descending ? `-${key}` : key;
        state.page = 1;
        load().then(() => results.querySelector(`[data-sort="${key}"]`)?.focus()); // the header was redrawn
      },
    }, label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (descending ? ' \u25bc' : ' \u25b2') : ''));
    return h('th', { scope: 'col', 'aria-sort': active ? (descending ? 'descending' : 'ascending') : false }, button);
  }

  function table(answer) {
    if (answer.schedules.length === 0) {
      return h('p', { class: 'empty' }, answer.total_count === 0 && !state.name_prefix && !state.kind && !state.enabled
        ? 'No tasks yet. Create the first one with \u201cNew task\u201d.' : 'No task matches.');
    }
    return h('table', { class: 'tasks' },
      h('caption', { class: 'visually-hidden' }, 'Tasks; the sortable columns have buttons in their headers'),
      h('thead', {}, h('tr', {},
        sortHeader('name', SORTABLE.name),
        h('th', { scope: 'col' }, 'Kind'),
        sortHeader('next_run', `${SORTABLE.next_run} (${zone})`),
        sortHeader('last_run', SORTABLE.last_run),
        h('th', { scope: 'col' }, 'Enabled'),
        h('th', { scope: 'col' }, 'Failures'))),
      h('tbody', {}, answer.schedules.map((task) => h('tr', { 'data-id': task.schedule_id },
        h('td', { 'data-label': 'Name' }, h('a', { href: `#/tasks/${task.schedule_id}` }, task.name)),
        h('td', { 'data-label': 'Kind' }, KINDS[kindOf(task.trigger)] ?? kindOf(task.trigger)),
        h('td', { 'data-label': 'Next run', class: 'next-run' }, timeElement(task.next_run_at, zone)),
        h('td', { 'data-label': 'Last run' }, lastRunText(task.last_run, zone)),
        h('td', { 'data-label': 'Enabled' }, task.enabled ? 'yes' : h('span', { class: 'off' }, 'no')),
        h('td', { 'data-label': 'Failures' }, `${task.consecutive_failures}${task.max_failures ? ` of ${task.max_failures}` : ''}`)))));
  }

  function pager(answer) {
    const pages = Math.max(answer.total_pages, 1);
    const move = (page) => () => {
      state.page = page;
      load();
    };
    return h('nav', { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', disabled: answer.page <= 1, onclick: move(answer.page - 1) }, 'Previous page'),
      h('span', {}, `Page ${answer.page} of ${pages} \u00b7 ${answer.total_count} task${answer.total_count === 1 ? '' : 's'}`),
      h('button', { type: 'button', disabled: answer.page >= pages, onclick: move(answer.page + 1) }, 'Next page'));
  }

  let typing = null;
  nameFilter.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.name_prefix = nameFilter.value;
      state.page = 1;
      load();
    }, 250);
  });
  for (const [select, key] of [[kindFilter, 'kind'], [enabledFilter, 'enabled']]) {
    select.addEventListener('change', () => {
      state[key] = select.value;
      state.page = 1;
      load();
    });
  }

  await load();
  return h('section', { class: 'tasks-view' },
    h('div', { class: 'title-row' }, h('h1', {}, 'Tasks'), h('a', { class: 'button primary', href: '#/tasks/new' }, 'New task')),
    filters, status, results);
}
