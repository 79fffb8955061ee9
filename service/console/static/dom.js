// Building the page from data without innerHTML (so no text the API returns can become markup), forms'
// fields with their labels and error slots, errors shown next to the field they name, and times.

let lastId = 0;
export const uid = (prefix) => `${prefix}-${++lastId}`;

// h('a', {href: '#/x', class: 'button'}, 'text', child, [children]): an element. `on<event>` props are
// listeners; true is an empty attribute; false, null and undefined leave the attribute out.
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

// A labelled control with an optional hint and an error slot. `path` is the API field it stands for: an
// error message starting with that path is shown here (showErrors).
export function field({ label, control, hint, path, className = '' }) {
  const id = control.id || uid('field');
  control.id = id;
  const hintElement = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  control.setAttribute('aria-describedby', [hintElement?.id, error.id].filter(Boolean).join(' '));
  if (path) control.dataset.path = path;
  control.dataset.error = error.id;
  return h('div', { class: `field ${className}`.trim() }, h('label', { for: id }, label), control, hintElement, error);
}

// A fieldset standing for an API object (`trigger.periodical.point`, `push.to`), with its own error slot.
export function group({ legend, path, className = '', hidden = false }, ...children) {
  const error = h('p', { class: 'field-error', id: uid('group-error'), hidden: true });
  const set = h('fieldset', { class: className, hidden, 'data-path': path, 'data-error': error.id },
    h('legend', {}, legend), ...children, error);
  return set;
}

// The API's message names the field first (`trigger.single.time: must be ...`), several joined by "; ".
export function errorParts(message) {
  return String(message).split('; ').map((text) => {
    const found = /^([A-Za-z_][\w.[\]]*): /.exec(text);
    return { path: found ? found[1] : '', text };
  });
}

const visible = (element) => element.closest('[hidden]') === null;

// The visible element of `root` standing for `path`: its own, else the nearest parent object's.
function holderOf(root, path) {
  let best = null;
  for (const element of root.querySelectorAll('[data-path]')) {
    const own = element.dataset.path;
    const covers = path === own || path.startsWith(`${own}.`) || path.startsWith(`${own}[`);
    if (covers && visible(element) && (!best || own.length > best.dataset.path.length)) best = element;
  }
  return best;
}

export function clearErrors(root, summary) {
  for (const element of root.querySelectorAll('[aria-invalid]')) element.removeAttribute('aria-invalid');
  for (const slot of root.querySelectorAll('.field-error')) {
    slot.textContent = '';
    slot.hidden = true;
  }
  if (summary) {
    summary.textContent = '';
    summary.hidden = true;
  }
}

// Each part of an API error beside the field it names; the rest (and auth or server errors) in `summary`.
// Returns the first element marked, to move the focus to.
export function showErrors(root, error, summary) {
  clearErrors(root, summary);
  let first = null;
  const unplaced = [];
  for (const part of errorParts(error.message)) {
    const holder = part.path ? holderOf(root, part.path) : null;
    if (!holder) {
      unplaced.push(part.text);
      continue;
    }
    const slot = document.getElementById(holder.dataset.error);
    slot.textContent = slot.textContent ? `${slot.textContent}; ${part.text}` : part.text;
    slot.hidden = false;
    holder.setAttribute('aria-invalid', 'true');
    first ??= holder;
  }
  if (unplaced.length && summary) {
    summary.textContent = unplaced.join('; ');
    summary.hidden = false;
  }
  return first;
}

// A modal question (the native <dialog>: focus stays inside, Escape cancels). Resolves true on confirm.
export function confirmDialog({ title, text, confirm }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': titleId });
    const close = (answer) => () => dialog.close(answer);
    dialog.append(
      h('h2', { id: titleId }, title),
      h('p', {}, text),
      h('div', { class: 'actions' },
        h('button', { type: 'button', autofocus: true, onclick: close('cancel') }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: close('confirm') }, confirm)),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'confirm');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// -- times --------------------------------------------------------------------------------------------------

const formats = new Map();
// An instant (RFC 3339) as wall-clock time `yyyy-mm-dd hh:mm:ss` in an IANA zone.
export function wallTime(instant, zone) {
  if (!formats.has(zone)) {
    formats.set(zone, new Intl.DateTimeFormat('en-GB', {
      timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
    }));
  }
  const parts = Object.fromEntries(formats.get(zone).formatToParts(new Date(instant)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

// <time> showing the instant in `zone`, with UTC on hover (title) and in its datetime attribute.
export function timeElement(instant, zone, shown = null) {
  if (!instant) return h('span', { class: 'none' }, '—');
  const utc = `${wallTime(instant, 'UTC')} UTC`;
  return h('time', { datetime: instant, title: utc }, shown ?? wallTime(instant, zone));
}
