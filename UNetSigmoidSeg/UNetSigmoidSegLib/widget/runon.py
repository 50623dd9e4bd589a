"""The panel's *Run on* group (Qt wiring): this computer, or a server with its URL, token, TLS files and models.

The rules are in ``remote_rules`` (plain Python); the settings live in ``qt.QSettings`` (Slicer's application
settings), never in the parameter node or the scene. The panel asks this object which runner to use and what to
show; all network calls run in the ``RemoteRunner``'s threads — nothing here waits on the server.
"""

import time

import qt

from ..errors import UserError
from . import remote_rules as R
from .errordisplay import showErrors


class RunOn:
    """Owns the Run-on widgets, the remote settings and the ``RemoteRunner`` (``remote``) once connected."""

    def __init__(self, panel):
        self.panel = panel
        self.ui = panel.ui
        self.settings = R.load(qt.QSettings().value)
        self.remote = None  # RemoteRunner once connected
        self._models = None  # the names shown in the server model list
        ui = self.ui
        for value, tip in R.RUN_ON_CHOICES:
            ui.runOnComboBox.addItem(value)
            ui.runOnComboBox.setItemData(ui.runOnComboBox.count - 1, tip, qt.Qt.ToolTipRole)
        for widget in (ui.runOnComboBox, ui.serverUrlLineEdit, ui.serverTokenLineEdit):
            widget.blockSignals(True)
        ui.runOnComboBox.currentText = self.settings.run_on
        ui.serverUrlLineEdit.text = self.settings.url
        ui.serverTokenLineEdit.text = self.settings.token
        ui.serverCaPathLineEdit.currentPath = self.settings.cafile  # (not connected yet)
        ui.clientCertPathLineEdit.currentPath = self.settings.client_cert
        ui.clientKeyPathLineEdit.currentPath = self.settings.client_key
        for widget in (ui.runOnComboBox, ui.serverUrlLineEdit, ui.serverTokenLineEdit):
            widget.blockSignals(False)
        ui.runOnComboBox.connect("currentIndexChanged(int)", self.onRunOnChanged)
        ui.serverConnectButton.connect("clicked()", self.onConnect)
        ui.serverUrlLineEdit.connect("editingFinished()", self.onEdited)
        ui.serverTokenLineEdit.connect("editingFinished()", self.onEdited)
        ui.serverCaPathLineEdit.connect("currentPathChanged(QString)", self.onEdited)
        ui.clientCertPathLineEdit.connect("currentPathChanged(QString)", self.onEdited)
        ui.clientKeyPathLineEdit.connect("currentPathChanged(QString)", self.onEdited)
        # a path CTK's validator rejects (a cleared one) sends validInputChanged only
        for path in (ui.serverCaPathLineEdit, ui.clientCertPathLineEdit, ui.clientKeyPathLineEdit):
            path.connect("validInputChanged(bool)", self.onEdited)
        ui.serverModelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        if self.server and not R.connection_problem(self.settings):
            self.connect()
        self.show()

    # ---------------------------------------------------------------- state
    @property
    def server(self) -> bool:
        return self.settings.server

    def described(self):
        return self.remote.describe() if self.remote is not None else None

    def error(self):
        return self.remote.connection_error if self.remote is not None else None

    def problem(self) -> str:
        """Why Segment cannot run on the server now ("" when it can, or when running on this computer)."""
        return R.server_problem(self.settings, self.described(), self.error())

    def modelInfo(self):
        """(ModelInfo, "") of the chosen server model, or (None, what is wrong)."""
        return R.model_choice(self.described(), self.settings.model)

    # ---------------------------------------------------------------- settings
    def readWidgets(self) -> bool:
        """Take the widgets' values into the settings and save them; True when the URL, token or a TLS file
        changed."""
        before = self.settings.connection()
        self.settings.run_on = self.ui.runOnComboBox.currentText
        self.settings.url = self.ui.serverUrlLineEdit.text.strip()
        self.settings.token = self.ui.serverTokenLineEdit.text.strip()
        self.settings.cafile = self.ui.serverCaPathLineEdit.currentPath.strip()
        self.settings.client_cert = self.ui.clientCertPathLineEdit.currentPath.strip()
        self.settings.client_key = self.ui.clientKeyPathLineEdit.currentPath.strip()
        R.save(self.settings, qt.QSettings().setValue)
        return before != self.settings.connection()

    def onRunOnChanged(self, index=None):
        self.readWidgets()
        if self.server and (self.remote is None or self.remote.closed) and not R.connection_problem(self.settings):
            self.connect()
        self.panel.onRunOnChanged()
        if not self.server:
            self.disconnect()  # the logic got this computer's runner (or gets it at the next Segment)
        self.show()

    def onEdited(self, value=None):
        if self.readWidgets() and self.remote is not None:
            self.disconnect()  # another server, token or TLS file: press Connect
        self.show()
        self.panel.updateStatus()

    def onConnect(self):
        self.readWidgets()
        with showErrors("Cannot connect to the server."):
            problem = R.connection_problem(self.settings)
            if problem:
                raise UserError(problem, "Fill in the Run-on group, then press Connect.")
            self.connect()
        self.panel.onRunOnChanged()
        self.show()

    # ---------------------------------------------------------------- the runner
    def connect(self) -> None:
        """A new ``RemoteRunner`` for the settings; it asks the server for its versions and models in the
        background (the panel's timer polls)."""
        from ..runners import make_runner

        self.disconnect()
        self.remote = make_runner(server=self.settings.url, token=self.settings.token, **self.settings.tls_options())
        self.remote.refresh()
        self.panel.pollUntil(time.time() + 120.0)

    def disconnect(self) -> None:
        logic = self.panel.logic
        if self.remote is not None and (logic is None or logic.runner is not self.remote):
            self.remote.close()  # the logic closes the runner it holds when it gets another
        self.remote = None
        self._models = None
        self.ui.serverModelComboBox.clear()

    def poll(self) -> bool:
        """(the panel's timer) Show what the server said; True while still waiting for it."""
        if self.remote is None:
            return False
        self.fillModels(self.described())
        self.show()
        return self.remote.refreshing

    def fillModels(self, described) -> None:
        items = R.model_items(described)
        names = tuple(name for name, _tip in items)
        if described is None or names == self._models:
            return
        combo = self.ui.serverModelComboBox
        combo.blockSignals(True)
        combo.clear()
        for name, tip in items:
            combo.addItem(name)
            combo.setItemData(combo.count - 1, tip, qt.Qt.ToolTipRole)
        if self.settings.model in names:
            combo.currentText = self.settings.model
        combo.blockSignals(False)
        self._models = names
        self.onModelChanged()

    def onModelChanged(self, index=None):
        name = self.ui.serverModelComboBox.currentText
        if name and name != self.settings.model:
            self.settings.model = name
            R.save(self.settings, qt.QSettings().setValue)
            self.panel.onServerModelChanged()
        self.panel.requestSummary()

    def show(self) -> None:
        ui, server = self.ui, self.server
        for widget in (
            ui.serverUrlLabel,
            ui.serverUrlLineEdit,
            ui.serverTokenLabel,
            ui.serverTokenLineEdit,
            ui.serverConnectButton,
            ui.serverStatusLabel,
            ui.serverModelComboBox,
            ui.serverCaLabel,
            ui.serverCaPathLineEdit,
            ui.clientCertLabel,
            ui.clientCertPathLineEdit,
            ui.clientKeyLabel,
            ui.clientKeyPathLineEdit,
        ):
            widget.visible = server
        ui.modelPathLineEdit.visible = not server
        ui.bundleFolderButton.visible = not server
        ui.trustBundleCheckBox.enabled = not server  # a server decides what it trusts
        remote = self.remote
        ui.serverStatusLabel.text = R.status_text(
            self.settings, self.described(), self.error(), remote is not None and remote.refreshing
        )
        running = self.panel.handle is not None
        ui.runOnComboBox.enabled = not running
        ui.serverConnectButton.enabled = not running

    def close(self) -> None:
        self.disconnect()
