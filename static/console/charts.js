// Charts of the console (house rule 11): the page renders an empty element with
// data-chart-url; this fetches the Plotly figure ({data, layout}) from that URL and draws it
// with the Plotly.js served by this installation (static/vendor/plotly, never a CDN).
(function () {
  "use strict";

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
  };

  function showStatus(element, text) {
    element.textContent = "";
    var status = document.createElement("p");
    status.className = "chart-status chart-status-error";
    status.textContent = text;
    element.appendChild(status);
  }

  function draw(element) {
    if (!window.Plotly) {
      showStatus(element, "The chart library did not load; the table has the same figures.");
      return;
    }
    fetch(element.getAttribute("data-chart-url"), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.detail || "the server answered " + response.status);
          return body;
        });
      })
      .then(function (figure) {
        element.textContent = "";
        return window.Plotly.newPlot(element, figure.data, figure.layout, CONFIG);
      })
      .then(function () {
        element.setAttribute("data-chart-state", "drawn");
      })
      .catch(function (error) {
        showStatus(element, "The chart could not be drawn (" + error.message + "); the table has the same figures.");
      });
  }

  document.querySelectorAll("[data-chart-url]").forEach(draw);
})();
