/* submission.js: the live submission page.  While the submission is queued or running it
 * follows the server-sent events of /api/v1/submissions/{id}/events (status, and progress
 * with stage and percentage) and moves the progress bar; when the stream is unavailable it
 * polls the JSON instead.  At the end it swaps in the freshly rendered page and draws the
 * latency histogram and the per-layer profile from the API's JSON.  A remembered team token
 * is sent so the team sees its own config. */
'use strict';

(() => {
	const TERMINAL = ['finished', 'failed', 'cancelled'];
	const root = document.getElementById('sub');
	if (!root)
		return;
	const id = root.dataset.id;
	const api = '/api/v1/submissions/' + encodeURIComponent(id);
	let finishing = false;
	const seen = [];  /* stage names in the order they arrived */

	function authHeaders() {
		const t = TM.savedToken();
		return t ? { Authorization: 'Bearer ' + t } : {};
	}

	// ---- live progress ----

	function setStatus(st) {
		root.dataset.status = st;
		const badge = document.getElementById('status-badge');
		if (badge) {
			badge.textContent = st;
			badge.className = 'badge ' + st;
		}
	}

	function onProgress(p) {
		const bar = document.getElementById('progress');
		if (!bar)
			return;
		const pct = Math.max(0, Math.min(100, Number(p.pct) || 0));
		bar.value = pct;
		bar.textContent = pct.toFixed(0) + '%';
		document.getElementById('stage').textContent =
			`Stage: ${p.stage || '?'} (${pct.toFixed(1)}%)`;
		document.getElementById('progress-message').textContent = p.message || '';
		if (p.stage && !seen.includes(p.stage))
			seen.push(p.stage);
		document.getElementById('stages').replaceChildren(...seen.map((s) => TM.el('li', {
			'data-stage': s,
			class: s === p.stage ? null : 'done',
			'aria-current': s === p.stage ? 'step' : null,
		}, s)));
	}

	async function finish() {
		if (finishing)
			return;
		finishing = true;
		const doc = await TM.page(window.location.href);
		const fresh = doc.getElementById('sub');
		if (fresh)
			root.replaceWith(document.adoptNode(fresh));
		await draw();
	}

	function poll() {
		const timer = window.setInterval(async () => {
			try {
				const r = await TM.json(api, { headers: authHeaders() });
				if (!r.ok || !r.body)
					return;
				setStatus(r.body.status);
				if (TERMINAL.includes(r.body.status)) {
					window.clearInterval(timer);
					await finish();
				}
			} catch (e) {
				/* try again on the next tick */
			}
		}, 2000);
	}

	function follow() {
		if (!window.EventSource) {
			poll();
			return;
		}
		const es = new EventSource(api + '/events');
		es.addEventListener('progress', (ev) => {
			try {
				onProgress(JSON.parse(ev.data));
			} catch (e) {
				/* a malformed line is skipped */
			}
		});
		es.addEventListener('status', (ev) => {
			let st = null;
			try {
				st = JSON.parse(ev.data).status;
			} catch (e) {
				return;
			}
			setStatus(st);
			if (TERMINAL.includes(st)) {
				es.close();
				finish().catch(() => {});
			}
		});
		es.addEventListener('error', () => {
			/* A closed stream (not reconnecting): fall back to polling. */
			if (es.readyState === EventSource.CLOSED && !finishing)
				poll();
		});
	}

	// ---- charts ----

	async function timings(body) {
		const res = body.result || {};
		if (res.timings && Array.isArray(res.timings.submission))
			return res.timings;
		const r = await TM.json(api + '/timings', { headers: authHeaders() });
		if (r.ok && r.body && Array.isArray(r.body.submission))
			return r.body;
		return null;
	}

	async function draw() {
		const r = await TM.json(api, { headers: authHeaders() });
		if (!r.ok || !r.body)
			return;
		const body = r.body, res = body.result;
		const pre = document.getElementById('config');
		if (body.config && pre && pre.hidden) {
			pre.textContent = JSON.stringify(body.config, null, 2);
			pre.hidden = false;
			const note = document.getElementById('config-hidden');
			if (note)
				note.hidden = true;
		}
		if (!res)
			return;
		const lat = res.latency || {}, blat = res.baseline_latency || {};
		const hist = document.getElementById('histogram');
		if (hist) {
			const t = await timings(body);
			const marks = [
				{ value: lat.p90, label: 'entry p90 ' + TM.fmtNs(lat.p90), row: 0 },
				{ value: blat.p90, label: 'baseline p90 ' + TM.fmtNs(blat.p90), row: 1 },
			];
			if (t) {
				TM.histogram(hist, [
					{ name: 'entry', values: t.submission || [], cls: 'bar-a', marks: [marks[0]] },
					{ name: 'baseline', values: t.baseline || [], cls: 'bar-b', marks: [marks[1]] },
				], 'Latency histogram of the entry and the baseline');
			} else {
				/* No raw timings: the summary's percentiles as bars. */
				const keys = ['min', 'median', 'p90', 'p95', 'p99', 'max'];
				const items = [];
				for (const k of keys) {
					if (lat[k] > 0)
						items.push({ label: 'entry ' + k, value: lat[k], text: TM.fmtNs(lat[k]) });
					if (blat[k] > 0)
						items.push({ label: 'baseline ' + k, value: blat[k], text: TM.fmtNs(blat[k]) });
				}
				TM.bars(hist, items, 'Latency percentiles of the entry and the baseline');
			}
			hist.before(TM.el('p', { class: 'legend' },
				TM.el('span', {}, TM.el('span', { class: 'swatch a' }), 'entry'),
				TM.el('span', {}, TM.el('span', { class: 'swatch b' }), 'baseline')));
		}
		const prof = document.getElementById('profile-chart');
		if (prof) {
			const layers = (res.profile || []).map((l) => ({
				label: `${l.layer || '?'} ${l.op || ''}`.trim(),
				value: Number(l.time_ns) || 0,
				text: TM.fmtNs(Number(l.time_ns) || 0),
				note: l.kernel || '',
			}));
			TM.bars(prof, layers, 'Time per layer');
		}
	}

	if (TERMINAL.includes(root.dataset.status))
		draw().catch(() => {});
	else
		follow();
})();
