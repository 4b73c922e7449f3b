/* submit.js: the submit form.  The token is kept in localStorage only while "remember" is
 * ticked; the event picker loads the event's example configs (/api/v1/events/{id}/examples);
 * the editor gets line numbers; a file can be loaded into it; Validate posts the text to
 * /api/v1/validate and lists each error under its field path, marking the line the field is
 * on; Submit posts it to /api/v1/submissions with the token and opens the submission page. */
'use strict';

(() => {
	const form = document.getElementById('submit-form');
	if (!form)
		return;
	const $ = (id) => document.getElementById(id);
	const token = $('token'), remember = $('remember'), tokenError = $('token-error');
	const eventSel = $('event'), exampleSel = $('example'), config = $('config');
	const gutter = $('gutter'), statusEl = $('status'), errorsEl = $('errors');
	let examples = [];
	let badLines = new Map();

	// ---- token ----

	const saved = TM.savedToken();
	if (saved) {
		token.value = saved;
		remember.checked = true;
	}
	function storeToken() {
		try {
			if (remember.checked && token.value)
				window.localStorage.setItem(TM.TOKEN_KEY, token.value);
			else
				window.localStorage.removeItem(TM.TOKEN_KEY);
		} catch (e) {
			/* storage disabled: nothing is remembered */
		}
	}
	remember.addEventListener('change', storeToken);
	token.addEventListener('input', () => {
		tokenError.hidden = true;
		token.removeAttribute('aria-invalid');
		if (remember.checked)
			storeToken();
	});

	// ---- editor ----

	function renderGutter() {
		const n = config.value.split('\n').length;
		const frag = document.createDocumentFragment();
		for (let i = 1; i <= n; i++) {
			const why = badLines.get(i);
			frag.append(why ? TM.el('span', { class: 'bad', title: why }, String(i)) : String(i));
			frag.append('\n');
		}
		gutter.replaceChildren(frag);
		gutter.scrollTop = config.scrollTop;
	}
	config.addEventListener('input', () => {
		badLines = new Map();
		renderGutter();
	});
	config.addEventListener('scroll', () => { gutter.scrollTop = config.scrollTop; });
	renderGutter();

	function setConfig(text) {
		config.value = text;
		badLines = new Map();
		renderGutter();
		clearResults();
	}

	// ---- examples ----

	async function loadExamples(loadFirst) {
		const r = await TM.json(`/api/v1/events/${encodeURIComponent(eventSel.value)}/examples`);
		if (!r.ok || !r.body)
			return;
		examples = r.body.examples || [];
		exampleSel.replaceChildren(...examples.map((e) => TM.el('option', { value: e.name }, e.name)));
		if (loadFirst && examples.length)
			setConfig(examples[0].config);
	}
	eventSel.addEventListener('change', () => { loadExamples(true).catch(() => {}); });
	$('load-example').addEventListener('click', () => {
		const ex = examples.find((e) => e.name === exampleSel.value);
		if (ex)
			setConfig(ex.config);
	});
	loadExamples(false).catch(() => {});

	$('file').addEventListener('change', (ev) => {
		const f = ev.target.files && ev.target.files[0];
		if (!f)
			return;
		if (f.size > 256 * 1024) {
			showStatus('bad', `The file is ${f.size} bytes; configs are at most 256 KiB.`);
			return;
		}
		const rd = new FileReader();
		rd.onload = () => setConfig(String(rd.result));
		rd.readAsText(f);
	});

	// ---- results ----

	function clearResults() {
		errorsEl.replaceChildren();
		statusEl.textContent = '';
		statusEl.className = 'status';
	}

	function showStatus(kind, text) {
		statusEl.className = 'status ' + kind;
		statusEl.textContent = text;
	}

	/* The line where a field path ("optimize.prune.sparsity", "model.hidden[2]") is written:
	 * each key is looked for after the previous one; 0 when not found. */
	function lineOf(path) {
		if (!path)
			return 0;
		const text = config.value;
		let pos = 0, found = -1;
		for (const seg of path.replace(/\[\d+\]/g, '').split('.')) {
			if (!seg)
				continue;
			const at = text.indexOf(JSON.stringify(seg), pos);
			if (at < 0)
				break;
			found = at;
			pos = at + seg.length + 2;
		}
		return found < 0 ? 0 : text.slice(0, found).split('\n').length;
	}

	function showErrors(errors, more) {
		badLines = new Map();
		const items = errors.map((e) => {
			const line = lineOf(e.field);
			if (line)
				badLines.set(line, e.message);
			return TM.el('li', { 'data-field': e.field || '' },
				TM.el('code', { class: 'path' }, e.field || '(document)'),
				TM.el('span', { class: 'message' }, e.message),
				line ? TM.el('span', { class: 'line' }, `line ${line}`) : null);
		});
		if (more)
			items.push(TM.el('li', {}, `and ${more} more`));
		errorsEl.replaceChildren(...items);
		renderGutter();
	}

	async function validate() {
		clearResults();
		const r = await TM.json('/api/v1/validate', { method: 'POST', body: config.value,
			headers: { 'Content-Type': 'application/json' } });
		if (!r.body) {
			showStatus('bad', `Validation failed (HTTP ${r.status}).`);
			return false;
		}
		if (r.body.error) {
			showStatus('bad', r.body.error.message);
			return false;
		}
		if (r.body.valid) {
			badLines = new Map();
			renderGutter();
			const est = r.body.estimates || {};
			showStatus('good', `Valid: ${r.body.event}, ${r.body.division} division; ` +
				`${TM.fmtCount(est.params || 0)} parameters, ` +
				`${TM.fmtCount(est.flops_per_inference || 0)} FLOPs per inference.`);
			return true;
		}
		const errs = r.body.errors || [];
		showStatus('bad', `${errs.length + (r.body.more_errors || 0)} problem` +
			(errs.length === 1 ? '' : 's') + ' in the config:');
		showErrors(errs, r.body.more_errors);
		return false;
	}

	$('validate').addEventListener('click', () => {
		validate().catch((e) => showStatus('bad', 'Validation failed: ' + e.message));
	});

	form.addEventListener('submit', (ev) => {
		ev.preventDefault();
		submit().catch((e) => showStatus('bad', 'Submitting failed: ' + e.message));
	});

	async function submit() {
		clearResults();
		if (!token.value.trim()) {
			tokenError.textContent = 'A team token is needed to submit.';
			tokenError.hidden = false;
			token.setAttribute('aria-invalid', 'true');
			token.focus();
			return;
		}
		storeToken();
		const btn = $('submit');
		btn.disabled = true;
		try {
			const r = await TM.json('/api/v1/submissions', { method: 'POST', body: config.value,
				headers: { 'Content-Type': 'application/json',
					Authorization: 'Bearer ' + token.value.trim() } });
			if (r.status === 202 && r.body && r.body.links) {
				showStatus('good', `Submitted as #${r.body.id}; opening its page\u2026`);
				window.location.assign(r.body.links.page);
				return;
			}
			const err = (r.body && r.body.error) || { message: `HTTP ${r.status}` };
			if (r.status === 401 || r.status === 403) {
				tokenError.textContent = err.message;
				tokenError.hidden = false;
				token.setAttribute('aria-invalid', 'true');
				token.focus();
				return;
			}
			showStatus('bad', err.message);
			if (r.body && Array.isArray(r.body.errors))
				showErrors(r.body.errors, 0);
		} finally {
			btn.disabled = false;
		}
	}
})();
