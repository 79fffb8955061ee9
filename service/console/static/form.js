// Create and edit a task: its fields, the push, parameters' defaults, and the schedule builder, which shows
// the next five fires (POST /v4/schedules/preview) as the user types. Errors from the API appear beside the
// field their message names.

import { clearErrors, field, group, h, showErrors, uid, wallTime } from './dom.js';
import { KINDS, kindOf } from './tasks.js';

const WEEKDAYS = ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'];
const MONTH_DAYS = Array.from({ length: 31 }, (_, index) => String(index + 1).padStart(2, '0'));
const PLATFORMS = [['android', 'Android'], ['ios', 'iOS'], ['hmos', 'HarmonyOS'], ['web', 'Web']];
const TITLED = ['android', 'hmos', 'web']; // platforms whose notification object has a `title`

// <input type=datetime-local> and <input type=time> values <-> the API's wall-clock strings.
const apiDateTime = (value) => (value ? `${value.replace('T', ' ')}:00`.slice(0, 19) : '');
const inputDateTime = (text) => (text ? text.replace(' ', 'T') : '');
const apiTime = (value) => (value ? `${value}:00`.slice(0, 8) : '');
const list = (text) => text.split(',').map((item) => item.trim()).filter(Boolean);

function wallIn(zone, offsetMinutes) {
  return wallTime(new Date(Date.now() + offsetMinutes * 60_000).toISOString(), zone);
}

function addMonths(wall, months) {
  const [year, month, day] = wall.slice(0, 10).split('-').map(Number);
  const date = new Date(Date.UTC(year, month - 1 + months, day));
  return `${date.toISOString().slice(0, 10)}${wall.slice(10)}`;
}

const input = (props) => h('input', { autocomplete: 'off', ...props });
const select = (props, options, chosen) => h('select', props,
  options.map(([value, label]) => h('option', { value, selected: String(chosen) === String(value) }, label)));
function checkboxes(name, options, chosen) {
  return h('div', { class: 'checks' }, options.map(([value, label]) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name, value, checked: chosen.includes(value) }), label)));
}
const checked = (root, name) => [...root.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);

// -- the schedule builder ------------------------------------------------------------------------------------

function scheduleBuilder(context, stored, onChange) {
  const { zone } = context;
  const kind = kindOf(stored) ?? 'single';
  const single = stored?.single ?? {};
  const periodical = stored?.periodical ?? {};
  const cron = stored?.cron ?? {};
  const interval = stored?.interval ?? {};
  const soon = `${wallIn(zone, 60).slice(0, 16)}:00`;
  const today = `${wallIn(zone, 0).slice(0, 10)} 00:00:00`;
  const zoneType = stored?.[kind]?.zone_type ?? 1;

  const modes = h('div', { class: 'modes', role: 'radiogroup', 'aria-label': 'Kind of schedule' },
    Object.entries(KINDS).map(([value, label]) => h('label', { class: 'mode' },
      h('input', { type: 'radio', name: 'mode', value, checked: value === kind, disabled: Boolean(stored) && value !== kind }),
      label)));
  const zoneSelect = select({ name: 'zone_type', disabled: Boolean(stored) },
    [[1, `The app\u2019s time zone (${zone})`], [2, 'Each device\u2019s own time zone (one wave per UTC offset)']], zoneType);
  const zoneField = field({ label: 'Times are read in', control: zoneSelect });

  const f = {
    singleTime: input({ type: 'datetime-local', step: 1, value: inputDateTime(single.time ?? soon) }),
    start: input({ type: 'datetime-local', step: 1, value: inputDateTime(periodical.start ?? today) }),
    end: input({ type: 'datetime-local', step: 1, value: inputDateTime(periodical.end ?? addMonths(today, 6)) }),
    time: input({ type: 'time', step: 1, value: periodical.time ?? '09:00:00' }),
    unit: select({}, [['day', 'Day'], ['week', 'Week'], ['month', 'Month']], (periodical.time_unit ?? 'week').toLowerCase()),
    frequency: input({ type: 'number', min: 1, max: 100, value: periodical.frequency ?? 1, inputmode: 'numeric' }),
    expression: input({ value: cron.expression ?? '0 9 * * MON-FRI', spellcheck: 'false', class: 'mono' }),
    cronStart: input({ type: 'datetime-local', step: 1, value: inputDateTime(cron.start ?? '') }),
    cronEnd: input({ type: 'datetime-local', step: 1, value: inputDateTime(cron.end ?? '') }),
    intervalStart: input({ type: 'datetime-local', step: 1, value: inputDateTime(interval.start ?? soon) }),
    every: input({ type: 'number', min: 1, max: 1000, value: interval.every ?? 1, inputmode: 'numeric' }),
    intervalUnit: select({}, [['minute', 'Minutes'], ['hour', 'Hours'], ['day', 'Days']], interval.unit ?? 'hour'),
    intervalEnd: input({ type: 'datetime-local', step: 1, value: inputDateTime(interval.end ?? '') }),
  };
  const points = (periodical.point ?? ['MON']).map((point) => String(point).toUpperCase());
  const weekdays = group({ legend: 'On these days of the week', path: 'trigger.periodical.point', className: 'points' },
    checkboxes('weekday', WEEKDAYS.map((day) => [day, day.slice(0, 1) + day.slice(1).toLowerCase()]), points));
  const monthDays = group({ legend: 'On these days of the month', path: 'trigger.periodical.point', className: 'points days' },
    checkboxes('monthday', MONTH_DAYS.map((day) => [day, String(Number(day))]), points));

  const panels = {
    single: group({ legend: 'One-time', path: 'trigger.single', className: 'panel' },
      field({ label: 'Date and time', control: f.singleTime, path: 'trigger.single.time',
        hint: 'In the future, at most one year ahead.' })),
    periodical: group({ legend: 'Recurring', path: 'trigger.periodical', className: 'panel' },
      h('div', { class: 'row' },
        field({ label: 'Every', control: f.frequency, path: 'trigger.periodical.frequency' }),
        field({ label: 'Unit', control: f.unit, path: 'trigger.periodical.time_unit' }),
        field({ label: 'At', control: f.time, path: 'trigger.periodical.time' })),
      weekdays, monthDays,
      h('div', { class: 'row' },
        field({ label: 'From', control: f.start, path: 'trigger.periodical.start' }),
        field({ label: 'Until', control: f.end, path: 'trigger.periodical.end', hint: 'At most one year after the start.' }))),
    cron: group({ legend: 'Cron', path: 'trigger.cron', className: 'panel' },
      field({ label: 'Cron expression', control: f.expression, path: 'trigger.cron.expression',
        hint: 'Five fields: minute hour day-of-month month day-of-week, e.g. 0 9 * * MON-FRI, or @daily.' }),
      h('div', { class: 'row' },
        field({ label: 'From (optional)', control: f.cronStart, path: 'trigger.cron.start' }),
        field({ label: 'Until (optional)', control: f.cronEnd, path: 'trigger.cron.end' }))),
    interval: group({ legend: 'Interval', path: 'trigger.interval', className: 'panel' },
      h('div', { class: 'row' },
        field({ label: 'Every', control: f.every, path: 'trigger.interval.every' }),
        field({ label: 'Unit', control: f.intervalUnit, path: 'trigger.interval.unit' })),
      h('div', { class: 'row' },
        field({ label: 'First fire', control: f.intervalStart, path: 'trigger.interval.start' }),
        field({ label: 'Until (optional)', control: f.intervalEnd, path: 'trigger.interval.end' }))),
  };

  const previewTitle = uid('preview-title');
  const previewBody = h('div', { class: 'preview-body' });
  const previewAlert = h('p', { class: 'alert', role: 'alert', hidden: true });
  const preview = h('section', { class: 'preview', 'aria-labelledby': previewTitle, 'aria-live': 'polite' },
    h('h3', { id: previewTitle }, 'Next five fires'), previewAlert, previewBody);

  const element = group({ legend: 'Schedule', path: 'trigger', className: 'builder' },
    stored ? h('p', { class: 'hint' }, 'A task keeps its kind of schedule and its zone type; to change them, create a new task.') : null,
    modes, zoneField, Object.values(panels), preview);

  const mode = () => element.querySelector('input[name="mode"]:checked').value;
  function showMode() {
    const current = mode();
    for (const [name, panel] of Object.entries(panels)) panel.hidden = name !== current;
    zoneField.hidden = current === 'interval'; // interval triggers have no zone_type
    zoneSelect.dataset.path = `trigger.${current}.zone_type`;
    const unit = f.unit.value;
    weekdays.hidden = unit !== 'week';
    monthDays.hidden = unit !== 'month';
  }

  // The trigger the inputs describe, and what is still missing for a preview (required inputs left empty).
  function read() {
    const current = mode();
    const zone_type = Number(zoneSelect.value);
    const missing = [];
    const need = (control, what) => {
      if (!control.value) missing.push(what);
      return control.value;
    };
    const optional = (body, key, control) => {
      if (control.value) body[key] = apiDateTime(control.value);
      return body;
    };
    let trigger;
    if (current === 'single') {
      trigger = { single: { time: apiDateTime(need(f.singleTime, 'the date and time')), zone_type } };
    } else if (current === 'periodical') {
      const body = {
        start: apiDateTime(need(f.start, 'the start')), end: apiDateTime(need(f.end, 'the end')),
        time: apiTime(need(f.time, 'the time of day')), time_unit: f.unit.value,
        frequency: Number(need(f.frequency, 'how often')),
      };
      if (f.unit.value !== 'day') body.point = checked(element, f.unit.value === 'week' ? 'weekday' : 'monthday');
      trigger = { periodical: { ...body, zone_type } };
    } else if (current === 'cron') {
      const body = optional(optional({ expression: need(f.expression, 'the expression').trim() }, 'start', f.cronStart), 'end', f.cronEnd);
      trigger = { cron: { ...body, zone_type } };
    } else {
      const body = { start: apiDateTime(need(f.intervalStart, 'the first fire')), every: Number(need(f.every, 'how often')), unit: f.intervalUnit.value };
      trigger = { interval: optional(body, 'end', f.intervalEnd) };
    }
    return { trigger, missing };
  }

  let timer = null;
  let asked = 0;
  async function refresh() {
    const question = ++asked;
    const { trigger, missing } = read();
    if (missing.length) {
      clearErrors(element, previewAlert);
      previewBody.replaceChildren(h('p', { class: 'hint' }, `Fill in ${missing.join(', ')} to see the next fires.`));
      return;
    }
    preview.setAttribute('aria-busy', 'true');
    try {
      const answer = await context.api.preview(trigger, 5);
      if (question !== asked) return; // the user typed on: a newer answer is coming
      clearErrors(element, previewAlert);
      previewBody.replaceChildren(answer.fires.length === 0
        ? h('p', {}, 'No fire left.')
        : h('ol', { class: 'fires' }, answer.fires.map((fire) => h('li', {},
          h('time', { datetime: fire.utc, title: `${wallTime(fire.utc, 'UTC')} UTC` }, fire.time),
          fire.wave ? h('span', { class: 'wave' }, ` wave ${fire.wave}`) : null))),
        h('p', { class: 'hint' }, `Times in ${answer.time_zone}; hover a time for UTC.`));
    } catch (error) {
      if (question !== asked) return;
      showErrors(element, error, previewAlert);
      previewBody.replaceChildren(h('p', { class: 'hint' }, 'No fires to show until the schedule is valid.'));
    } finally {
      if (question === asked) preview.removeAttribute('aria-busy');
    }
  }
  const changed = () => {
    showMode();
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
    onChange?.();
  };
  element.addEventListener('input', changed);
  element.addEventListener('change', changed);
  context.signal?.addEventListener('abort', () => clearTimeout(timer));
  showMode();
  refresh();
  return { element, read };
}

// -- the push and the task's own fields -----------------------------------------------------------------------

function titleOf(notification) {
  for (const platform of TITLED) if (notification?.[platform]?.title) return notification[platform].title;
  const ios = notification?.ios?.alert;
  return typeof ios === 'object' && ios ? ios.title ?? '' : '';
}

function pushEditor(stored) {
  const to = stored?.to ?? 'all';
  const target = to === 'all' ? 'all'
    : Object.keys(to).length === 1 && Array.isArray(to.alias) ? 'alias'
      : Object.keys(to).length === 1 && Array.isArray(to.tag) ? 'tag' : 'kept';
  const targets = [['all', 'Everyone'], ['alias', 'Aliases'], ['tag', 'Tags']];
  if (target === 'kept') targets.push(['kept', `As stored (${Object.keys(to).join(', ')})`]);
  const targetChoice = h('div', { class: 'modes', role: 'radiogroup', 'aria-label': 'Send to' },
    targets.map(([value, label]) => h('label', { class: 'mode' },
      h('input', { type: 'radio', name: 'target', value, checked: value === target }), label)));
  const aliases = input({ value: target === 'alias' ? to.alias.join(', ') : '' });
  const tags = input({ value: target === 'tag' ? to.tag.join(', ') : '' });
  const aliasField = field({ label: 'Aliases', control: aliases, path: 'push.to.alias', hint: 'Separated by commas; at most 1000.' });
  const tagField = field({ label: 'Tags', control: tags, path: 'push.to.tag', hint: 'Separated by commas; at most 20.' });

  const platform = stored?.body?.platform ?? 'all';
  const chosen = platform === 'all' ? PLATFORMS.map(([value]) => value) : [].concat(platform);
  const platforms = group({ legend: 'Platforms', path: 'push.body.platform', className: 'points' },
    checkboxes('platform', PLATFORMS, chosen));
  const notification = stored?.body?.notification ?? {};
  const title = input({ value: titleOf(notification) });
  const alert = h('textarea', { rows: 3 }, typeof notification.alert === 'string' ? notification.alert : '');

  const element = group({ legend: 'Push', path: 'push', className: 'push' },
    group({ legend: 'Send to', path: 'push.to' }, targetChoice, aliasField, tagField),
    platforms,
    group({ legend: 'Notification', path: 'push.body' },
      field({ label: 'Title (optional)', control: title }),
      field({ label: 'Alert text', control: alert, path: 'push.body.notification.alert' })));
  const showTarget = () => {
    const current = element.querySelector('input[name="target"]:checked').value;
    aliasField.hidden = current !== 'alias';
    tagField.hidden = current !== 'tag';
  };
  element.addEventListener('change', showTarget);
  showTarget();

  // The push to send: the stored one (keeping every field the form does not show) with the form's changes.
  function read() {
    const push = structuredClone(stored ?? { to: 'all', body: {} });
    const current = element.querySelector('input[name="target"]:checked').value;
    if (current === 'all') push.to = 'all';
    else if (current === 'alias') push.to = { alias: list(aliases.value) };
    else if (current === 'tag') push.to = { tag: list(tags.value) };
    push.body ??= {};
    const picked = checked(element, 'platform');
    push.body.platform = picked.length === PLATFORMS.length ? 'all' : picked;
    const note = push.body.notification ?? {};
    note.alert = alert.value;
    const titleText = title.value.trim();
    for (const [name] of PLATFORMS) {
      const applies = titleText && picked.includes(name);
      const own = note[name] ?? {};
      if (name === 'ios') {
        if (applies) own.alert = { title: titleText, body: alert.value };
        else if (typeof own.alert === 'object') delete own.alert;
      } else if (applies) own.title = titleText;
      else delete own.title;
      if (Object.keys(own).length) note[name] = own;
      else delete note[name];
    }
    push.body.notification = note;
    return push;
  }
  return { element, read };
}

function paramsText(params) {
  return Object.entries(params ?? {}).map(([name, value]) => `${name}=${value}`).join('\n');
}

function readParams(text) {
  const params = {};
  for (const line of text.split('\n').map((item) => item.trim()).filter(Boolean)) {
    const at = line.indexOf('=');
    if (at < 0) params[line] = '';
    else params[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return params;
}

export async function formView(context, id) {
  const { api } = context;
  const task = id ? await api.get(id) : null;
  const heading = task ? `Edit \u201c${task.name}\u201d` : 'New task';

  const name = input({ value: task?.name ?? '', required: true, maxlength: 255 });
  const description = h('textarea', { rows: 2, maxlength: 1000 }, task?.description ?? '');
  const maxFailures = input({ type: 'number', min: 0, max: 1000, value: task?.max_failures ?? 0, inputmode: 'numeric' });
  const enabled = input({ type: 'checkbox', checked: task ? task.enabled : true, disabled: !task });
  const params = h('textarea', { rows: 3, spellcheck: 'false', class: 'mono' }, paramsText(task?.params));
  const builder = scheduleBuilder(context, task?.trigger ?? null);
  const push = pushEditor(task?.push ?? null);
  const summary = h('p', { class: 'alert', role: 'alert', hidden: true, tabindex: -1 });
  const save = h('button', { type: 'submit', class: 'primary' }, task ? 'Save changes' : 'Create task');
  const initialTrigger = JSON.stringify(builder.read().trigger);

  const form = h('form', { class: 'task-form', novalidate: true },
    h('div', { class: 'title-row' }, h('h1', {}, heading)),
    summary,
    group({ legend: 'Task', path: null, className: 'task-fields' },
      field({ label: 'Name', control: name, path: 'name', hint: 'Letters, digits, underscores and inner spaces.' }),
      field({ label: 'Description (optional)', control: description, path: 'description' }),
      h('div', { class: 'row' },
        field({ label: 'Failures allowed', control: maxFailures, path: 'max_failures',
          hint: 'Consecutive failed runs before the task disables itself; 0: never.' }),
        field({ label: 'Enabled', control: enabled, path: 'enabled', className: 'inline',
          hint: task ? null : 'A new task starts enabled.' }))),
    builder.element,
    push.element,
    group({ legend: 'Parameters', path: 'params', className: 'params' },
      field({ label: 'Defaults, one per line as name=value', control: params, path: 'params',
        hint: 'The push may use {{name}} in any text; a run now or a webhook call may override the defaults.' })),
    h('div', { class: 'actions' }, save,
      h('a', { class: 'button', href: task ? `#/tasks/${task.schedule_id}` : '#/tasks' }, 'Cancel')));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    save.disabled = true;
    const body = {
      name: name.value.trim(),
      description: description.value,
      max_failures: maxFailures.value === '' ? 0 : Number(maxFailures.value),
      push: push.read(),
      params: readParams(params.value),
    };
    const trigger = builder.read().trigger;
    try {
      if (task) {
        body.enabled = enabled.checked;
        // A trigger is re-validated when sent (a time now past is refused): send it only when it changed.
        if (JSON.stringify(trigger) !== initialTrigger) body.trigger = trigger;
        await api.update(task.schedule_id, body);
        context.go(`#/tasks/${task.schedule_id}`, 'Saved.');
      } else {
        const created = await api.create({ ...body, enabled: true, trigger });
        context.go(`#/tasks/${created.schedule_id}`, `Created \u201c${created.name}\u201d.`);
      }
    } catch (error) {
      const first = showErrors(form, error, summary);
      (first ?? summary).focus();
    } finally {
      save.disabled = false;
    }
  });
  return form;
}
