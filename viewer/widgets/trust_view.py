"""Shows how far to trust what is on screen, as the session decides it: the model gate's banner (with
its Run anyway button), the case verdict's banner, the model list's fit marks and the line on the
chosen model, and the "outside the training domain" mark in the window title and the run line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from viewer.session.notices import title_mark
from viewer.session.readout import scan_title
from viewer.session.session import ReadingSession
from viewer.widgets.banner import Banner

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow

OUTSIDE_STYLE = "font-weight: bold; padding: 2px; color: #ff8a7a;"
PLAIN_STYLE = "font-weight: bold; padding: 2px;"


class TrustView:
    """Keeps `window`'s banners, model marks and title in step with `session`'s trust state."""

    def __init__(self, window: MainWindow, session: ReadingSession) -> None:
        self.window, self.session = window, session
        self.gate_banner = Banner("gateBanner")
        self.verdict_banner = Banner("verdictBanner")
        self.gate_banner.actionClicked.connect(lambda: window.request_run(deliberate=True))
        session.events.trust_changed.connect(self.update)
        window.model_panel.model_combo.currentIndexChanged.connect(lambda *_: self._show_fit_line())

    def update(self) -> None:
        """Everything: after a scan opened, a run was refused or started, a verdict arrived."""
        session, panel = self.session, self.window.model_panel
        panel.show_fits(session.gate.marks() if session.gate is not None else {})
        self._show_fit_line()
        self.update_banners()
        if session.volume is not None:
            title = scan_title(session.volume)
            self.window.setWindowTitle(f"{title}{title_mark(session.outside_domain)} — AIMC viewer")

    def update_banners(self) -> None:
        """The banners and the run line (also as slices finish: a pending verdict says how far it got)."""
        session = self.session
        self.gate_banner.show_notice(session.gate_notice())
        self.verdict_banner.show_notice(session.verdict_notice())
        self.window.run_label.setText(session.run_line())
        self.window.run_label.setStyleSheet(OUTSIDE_STYLE if session.outside_domain else PLAIN_STYLE)

    def _show_fit_line(self) -> None:
        spec = self.window.model_panel.spec()
        self.window.model_panel.show_fit_line(*self.session.fit_line(spec.name if spec is not None else ""))
