// mubench HTML report: paging and filters for the gallery. Plain JavaScript, no libraries.
// Without this script the page still shows the table, the protocols and the first gallery page.
(function () {
  "use strict";
  var DATA = window.MUBENCH_GALLERY;
  if (!DATA) { return; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function cell(c) {
    var td = el("td", "img" + (c.pass === true ? " pass" : c.pass === false ? " fail" : ""));
    if (c.img) {
      var img = el("img");
      img.src = c.img; img.alt = ""; img.loading = "lazy";
      if (c.reason) { img.title = c.reason; }
      td.appendChild(img);
    } else {
      td.appendChild(el("div", "noimg", c.missing));
    }
    var scores = el("div", "scores");
    c.scores.forEach(function (s) { scores.appendChild(el("span", "", s[0] + " " + s[1])); });
    td.appendChild(scores);
    return td;
  }

  function row(r) {
    var tr = el("tr", "gallery-row");
    tr.dataset.category = r.category;
    var th = el("th", "label");
    th.scope = "row";
    th.appendChild(el("div", "prompt", r.prompt));
    th.appendChild(el("div", "meta", r.id + " #" + r.index + " · seed " + r.seed));
    tr.appendChild(th);
    r.cells.forEach(function (c) { tr.appendChild(cell(c)); });
    return tr;
  }

  function keep(r, category, rule) {
    if (category && r.category !== category) { return false; }
    if (!rule) { return true; }
    var p = r.cells.map(function (c) { return c.pass; });
    if (rule === "all-pass") { return p.every(function (x) { return x === true; }); }
    if (rule === "any-fail") { return p.some(function (x) { return x === false; }); }
    if (rule === "differ") { return p.some(function (x) { return x === true; }) && p.some(function (x) { return x === false; }); }
    var parts = rule.split(":"), col = parseInt(parts[1], 10);
    return p[col] === (parts[0] === "pass");
  }

  function setup(section) {
    var g = DATA.galleries[section.dataset.gallery];
    if (!g) { return; }
    var form = section.querySelector("form.controls");
    var body = section.querySelector("tbody");
    var pager = section.querySelector(".pager");
    var count = form.querySelector(".count");
    var size = DATA.pageSize, page = 0;
    form.hidden = false;

    function render() {
      var category = form.elements.category.value;
      var rule = form.elements.rule ? form.elements.rule.value : "";
      var rows = g.rows.filter(function (r) { return keep(r, category, rule); });
      var pages = Math.max(1, Math.ceil(rows.length / size));
      page = Math.min(page, pages - 1);
      var shown = rows.slice(page * size, (page + 1) * size);
      body.replaceChildren.apply(body, shown.map(row));
      count.textContent = rows.length + " of " + g.rows.length + " rows";
      pager.replaceChildren();
      var prev = el("button", "", "← previous"), next = el("button", "", "next →");
      prev.type = next.type = "button";
      prev.disabled = page === 0; next.disabled = page >= pages - 1;
      prev.onclick = function () { page -= 1; render(); };
      next.onclick = function () { page += 1; render(); };
      pager.appendChild(prev); pager.appendChild(next);
      pager.appendChild(el("span", "meta", "page " + (page + 1) + " of " + pages + " (" +
        (rows.length ? page * size + 1 : 0) + "–" + (page * size + shown.length) + ")"));
    }
    form.addEventListener("change", function () { page = 0; render(); });
    render();
  }

  document.querySelectorAll("section.gallery").forEach(setup);
}());
