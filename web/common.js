/* common.js: what every TinyMLPerf page script shares: element builders that only ever set
 * text through textContent (data never goes through innerHTML), JSON and page fetching, number
 * formatting, and three small SVG charts drawn by hand (a scatter with a Pareto frontier, a
 * histogram of two series on a log axis, horizontal bars).  Loaded before the page's own
 * script; everything lives in the one global TM. */
'use strict';

const TM = (() => {
	const SVGNS = 'http://www.w3.org/2000/svg';

	// ---- DOM ----

	/* el('td', {class: 'num'}, 'text', child, ...): strings become text nodes. */
	function el(tag, attrs, ...kids) {
		const e = document.createElement(tag);
		for (const [k, v] of Object.entries(attrs || {}))
			if (v !== undefined && v !== null && v !== false)
				e.setAttribute(k, v === true ? '' : String(v));
		for (const k of kids)
			if (k !== undefined && k !== null)
				e.append(k);
		return e;
	}

	function svg(tag, attrs, text) {
		const e = document.createElementNS(SVGNS, tag);
		for (const [k, v] of Object.entries(attrs || {}))
			e.setAttribute(k, String(v));
		if (text !== undefined)
			e.textContent = String(text);
		return e;
	}

	// ---- fetching ----

	async function json(url, opts) {
		const r = await fetch(url, Object.assign({ cache: 'no-store' }, opts || {}));
		let body = null;
		try {
			body = await r.json();
		} catch (e) {
			body = null;
		}
		return { status: r.status, ok: r.ok, body };
	}

	/* Our own page at url, parsed (scripts in a parsed document never run). */
	async function page(url) {
		const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'text/html' } });
		if (!r.ok)
			throw new Error('HTTP ' + r.status);
		return new DOMParser().parseFromString(await r.text(), 'text/html');
	}

	/* Replace the element with id in this document by the one in doc; true if it changed. */
	function swap(doc, id) {
		const fresh = doc.getElementById(id);
		const cur = document.getElementById(id);
		if (!fresh || !cur)
			return false;
		if (fresh.outerHTML === cur.outerHTML)
			return false;
		cur.replaceWith(document.adoptNode(fresh));
		return true;
	}

	const TOKEN_KEY = 'tinymlperf.token';
	function savedToken() {
		try {
			return window.localStorage.getItem(TOKEN_KEY) || '';
		} catch (e) {
			return '';
		}
	}

	// ---- numbers ----

	/* v with at most digits significant digits, without trailing zeros after the point. */
	function sig(v, digits) {
		const s = Number(v).toPrecision(digits);
		if (s.includes('e'))
			return String(Number(s));
		return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
	}

	function fmtNs(ns) {
		if (!(ns > 0)) return '0';
		if (ns >= 1e9) return sig(ns / 1e9, 3) + ' s';
		if (ns >= 1e6) return sig(ns / 1e6, 3) + ' ms';
		if (ns >= 1e3) return sig(ns / 1e3, 3) + ' \u00b5s';
		return Math.round(ns) + ' ns';
	}

	function fmtCount(v) {
		if (v >= 1e9) return sig(v / 1e9, 3) + ' G';
		if (v >= 1e6) return sig(v / 1e6, 3) + ' M';
		if (v >= 1e4) return sig(v / 1e3, 3) + ' k';
		return sig(v, 4);
	}

	// ---- charts ----

	const W = 640;

	function frame(h, label) {
		const s = svg('svg', { viewBox: `0 0 ${W} ${h}`, role: 'img', 'aria-label': label });
		s.append(svg('title', {}, label));
		return s;
	}

	/* "Nice" ticks over [lo, hi]. */
	function ticks(lo, hi, n) {
		if (!(hi > lo)) return [lo];
		const raw = (hi - lo) / n;
		const p = Math.pow(10, Math.floor(Math.log10(raw)));
		const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
		const out = [];
		for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
			out.push(Number(v.toPrecision(12)));
		return out;
	}

	function empty(host, h, label, note) {
		const s = frame(h, label);
		s.append(svg('text', { x: W / 2, y: h / 2, 'text-anchor': 'middle', class: 'empty-note' }, note));
		host.replaceChildren(s);
	}

	/* Points {x, y, label, href}; the non-dominated ones (higher x and higher y are better)
	 * are drawn highlighted and joined by a line. */
	function pareto(host, points, opts) {
		const H = 360, L = 64, R = 16, T = 16, B = 48;
		const label = opts.label;
		if (!points.length) {
			empty(host, 160, label, 'No ranked entries yet');
			return;
		}
		const front = points.filter((p) => !points.some((q) => q !== p &&
			q.x >= p.x && q.y >= p.y && (q.x > p.x || q.y > p.y)));
		front.sort((a, b) => a.x - b.x);
		let x0 = Math.min(1, ...points.map((p) => p.x)), x1 = Math.max(...points.map((p) => p.x));
		let y0 = Math.min(...points.map((p) => p.y)), y1 = Math.max(...points.map((p) => p.y));
		const px = (x1 - x0) * 0.08 || 0.5, py = (y1 - y0) * 0.08 || Math.abs(y1) * 0.01 || 0.01;
		x0 -= px; x1 += px; y0 -= py; y1 += py;
		const sx = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
		const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
		const s = frame(H, label);
		const grid = svg('g', { class: 'grid' });
		const axis = svg('g', { class: 'axis' });
		for (const t of ticks(x0, x1, 6)) {
			grid.append(svg('line', { x1: sx(t), x2: sx(t), y1: T, y2: H - B }));
			s.append(svg('text', { x: sx(t), y: H - B + 16, 'text-anchor': 'middle' }, sig(t, 3) + '\u00d7'));
		}
		for (const t of ticks(y0, y1, 5)) {
			grid.append(svg('line', { x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
			s.append(svg('text', { x: L - 6, y: sy(t) + 4, 'text-anchor': 'end' }, opts.fmtY(t)));
		}
		axis.append(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B }));
		axis.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B }));
		s.append(grid, axis);
		s.append(svg('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' },
			'speedup over the baseline (\u00d7, higher is better \u2192)'));
		s.append(svg('text', { x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle',
			transform: `rotate(-90 14 ${(T + H - B) / 2})` }, opts.yLabel + ' (higher is better \u2191)'));
		if (front.length > 1)
			s.append(svg('polyline', { class: 'frontier',
				points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(' ') }));
		for (const p of points) {
			const onFront = front.includes(p);
			const a = svg('a', { href: p.href });
			const c = svg('circle', { cx: sx(p.x), cy: sy(p.y), r: onFront ? 6 : 4.5,
				class: onFront ? 'dot front' : 'dot' });
			c.append(svg('title', {}, `${p.label}: ${sig(p.x, 3)}\u00d7, ${opts.fmtY(p.y)}` +
				(onFront ? ' (on the frontier)' : '')));
			a.append(c);
			s.append(a);
		}
		host.replaceChildren(s);
	}

	/* Two series of positive values (ns) as overlaid histograms on a log axis. */
	function histogram(host, series, label) {
		const H = 300, L = 56, R = 16, T = 12, B = 48, NB = 40;
		const all = series.flatMap((s) => s.values).filter((v) => v > 0);
		if (!all.length) {
			empty(host, 120, label, 'No timings stored for this submission');
			return;
		}
		let lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all));
		if (hi - lo < 0.05) { lo -= 0.05; hi += 0.05; }
		const bw = (hi - lo) / NB;
		const counts = series.map((s) => {
			const c = new Array(NB).fill(0);
			for (const v of s.values)
				if (v > 0)
					c[Math.min(NB - 1, Math.floor((Math.log10(v) - lo) / bw))]++;
			return c.map((n) => n / Math.max(1, s.values.length));
		});
		const ymax = Math.max(...counts.flat()) || 1;
		const sx = (lv) => L + (lv - lo) / (hi - lo) * (W - L - R);
		const sy = (f) => T + (1 - f / ymax) * (H - T - B);
		const s = frame(H, label);
		const grid = svg('g', { class: 'grid' });
		for (const t of ticks(0, ymax * 100, 4)) {
			grid.append(svg('line', { x1: L, x2: W - R, y1: sy(t / 100), y2: sy(t / 100) }));
			s.append(svg('text', { x: L - 6, y: sy(t / 100) + 4, 'text-anchor': 'end' }, sig(t, 2) + '%'));
		}
		s.append(grid);
		series.forEach((ser, k) => {
			counts[k].forEach((f, i) => {
				if (f <= 0) return;
				const r = svg('rect', { x: sx(lo + i * bw) + 0.5, y: sy(f), width: Math.max(1, sx(lo + bw) - sx(lo) - 1),
					height: H - B - sy(f), class: ser.cls });
				r.append(svg('title', {}, `${ser.name}: ${(f * 100).toFixed(1)}% between ` +
					`${fmtNs(Math.pow(10, lo + i * bw))} and ${fmtNs(Math.pow(10, lo + (i + 1) * bw))}`));
				s.append(r);
			});
		});
		for (const m of series.flatMap((x) => x.marks || [])) {
			if (!(m.value > 0)) continue;
			const x = sx(Math.log10(m.value));
			s.append(svg('line', { x1: x, x2: x, y1: T, y2: H - B, class: 'mark' }));
			s.append(svg('text', { x: x + 3, y: T + 10 + (m.row || 0) * 14 }, m.label));
		}
		const axis = svg('g', { class: 'axis' });
		axis.append(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B }));
		s.append(axis);
		const n = 6;
		for (let i = 0; i <= n; i++) {
			const lv = lo + (hi - lo) * i / n;
			s.append(svg('text', { x: sx(lv), y: H - B + 16, 'text-anchor': 'middle' }, fmtNs(Math.pow(10, lv))));
		}
		s.append(svg('text', { x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' },
			'latency per query (log scale)'));
		host.replaceChildren(s);
	}

	/* Horizontal bars {label, value, text, note}: the note goes into the tooltip. */
	function bars(host, items, label) {
		if (!items.length) {
			empty(host, 120, label, 'No profile recorded');
			return;
		}
		const row = 26, L = 200, R = 90, T = 8;
		const H = T * 2 + row * items.length;
		const vmax = Math.max(...items.map((i) => i.value)) || 1;
		const s = frame(H, label);
		items.forEach((it, i) => {
			const y = T + i * row;
			const w = Math.max(1, it.value / vmax * (W - L - R));
			s.append(svg('text', { x: L - 6, y: y + row / 2 + 4, 'text-anchor': 'end' }, it.label));
			const r = svg('rect', { x: L, y: y + 4, width: w, height: row - 8, class: 'bar-a' });
			r.append(svg('title', {}, `${it.label}: ${it.text}` + (it.note ? ` (${it.note})` : '')));
			s.append(r);
			s.append(svg('text', { x: L + w + 6, y: y + row / 2 + 4 }, it.text));
		});
		host.replaceChildren(s);
	}

	return { el, svg, json, page, swap, savedToken, TOKEN_KEY, sig, fmtNs, fmtCount,
		pareto, histogram, bars };
})();
