"""The llmopt dashboard: page setup, navigation and the model/dataset picker all pages share."""

import streamlit as st

from dashboard import sidebar

st.set_page_config(page_title="llmopt", page_icon=":material/compress:", layout="wide")
page = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/compress.py", title="Compress & Evaluate", icon=":material/tune:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/grid_on:"),
        st.Page("pages/sweep.py", title="Sweep", icon=":material/show_chart:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    ]
)
sidebar.sidebar()
page.run()
