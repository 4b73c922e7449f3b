/* leaderboard.js: the leaderboard page on top of its server-rendered table: sorting by any
 * column (the baseline row stays pinned above), the Pareto chart of quality against speedup
 * from the API's JSON, and a refresh every 15 seconds that swaps in the rows of the freshly
 * rendered page when they changed (results landed). */
'use strict';

(() => {
	const table = document.getElementById('board');
	if (!table)
		return;
	let sortKey = null, sortDir = 1;

	function cellValue(tr, key, type) {
		const td = tr.querySelector(`td[data-key="${key}"]`);
		if (!td)
			return type === 'num' ? -Infinity : '';
		if (type === 'num')
			return td.dataset.value !== undefined ? Number(td.dataset.value) : -Infinity;
		return (td.dataset.value !== undefined ? td.dataset.value : td.textContent).toLowerCase();
	}

	function applySort() {
		if (!sortKey)
			return;
		const th = table.querySelector(`th[data-key="${sortKey}"]`);
		const type = th ? th.dataset.type : 'text';
		const body = document.getElementById('rows');
		const rows = Array.from(body.querySelectorAll('tr')).filter((r) => !r.classList.contains('empty'));
		rows.sort((a, b) => {
			const x = cellValue(a, sortKey, type), y = cellValue(b, sortKey, type);
			if (x < y) return -sortDir;
			if (x > y) return sortDir;
			return cellValue(a, 'rank', 'num') - cellValue(b, 'rank', 'num');
		});
		for (const r of rows)
			body.append(r);
		for (const h of table.querySelectorAll('thead th'))
			h.setAttribute('aria-sort', h.dataset.key === sortKey ? (sortDir > 0 ? 'ascending' : 'descending') : 'none');
	}

	for (const th of table.querySelectorAll('thead th')) {
		const btn = th.querySelector('button.sort');
		if (!btn)
			continue;
		btn.addEventListener('click', () => {
			const key = th.dataset.key;
			if (sortKey === key) {
				sortDir = -sortDir;
			} else {
				sortKey = key;
				/* Start with the better end first when the column says which is better. */
				const better = th.querySelector('.better');
				sortDir = better && better.title.startsWith('higher') ? -1 : 1;
			}
			applySort();
		});
	}
	sortKey = 'rank';

	// ---- Pareto chart ----

	const chart = document.getElementById('pareto');
	async function drawPareto() {
		if (!chart)
			return;
		const r = await TM.json(chart.dataset.src);
		if (!r.ok || !r.body)
			return;
		const points = (r.body.rows || []).map((row) => ({
			x: row.speedup, y: row.quality,
			label: `${row.team} \u2013 ${row.name || '#' + row.submission}`,
			href: '/submissions/' + row.submission,
		}));
		const pts = chart.dataset.quality === 'points';
		TM.pareto(chart, points, {
			label: 'Quality against speedup, ' + table.dataset.event + ', ' + table.dataset.division + ' division',
			yLabel: pts ? 'decathlon points' : 'top-1 accuracy',
			fmtY: (v) => pts ? TM.sig(v, 4) : TM.sig(v * 100, 4) + '%',
		});
	}
	drawPareto().catch(() => {});

	// ---- refresh ----

	const note = TM.el('p', { id: 'refresh-note', role: 'status' });
	table.closest('.scroll').after(note);
	let lastRows = document.getElementById('rows').outerHTML;

	async function refresh() {
		if (document.hidden)
			return;
		const doc = await TM.page(window.location.href);
		const fresh = doc.getElementById('rows');
		if (!fresh || fresh.outerHTML === lastRows)
			return;
		lastRows = fresh.outerHTML;
		document.getElementById('rows').replaceWith(document.adoptNode(fresh));
		TM.swap(doc, 'board-caption');
		applySort();
		await drawPareto();
		note.textContent = 'Updated at ' + new Date().toLocaleTimeString() + ': new results.';
	}
	window.setInterval(() => { refresh().catch(() => {}); }, 15000);
	document.addEventListener('visibilitychange', () => {
		if (!document.hidden)
			refresh().catch(() => {});
	});
})();
