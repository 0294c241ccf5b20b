"""The llmopt dashboard: page setup, navigation and the model/dataset picker all pages share."""

import streamlit as st

from dashboard import sidebar, urlstate

st.set_page_config(page_title="llmopt", page_icon=":material/compress:", layout="wide")
urlstate.restore()  # a link's (or a reload's) settings, before any widget is drawn
page = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/compress.py", title="Compress & Evaluate", icon=":material/tune:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:"),
        st.Page("pages/sweep.py", title="Sweep", icon=":material/show_chart:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/auto.py", title="Auto", icon=":material/auto_awesome:"),
    ]
)
urlstate.mirror(sidebar.sidebar())
urlstate.show_notes()
with urlstate.checked():
    page.run()
